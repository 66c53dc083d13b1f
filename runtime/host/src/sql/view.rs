//! The capability proper, following wasmtime's View pattern: [`SqlCtx`]
//! (per store: the sink's name, its grants, the pools, the caps and the
//! call's deadline), the [`SqlView`] trait the store data implements, the
//! host side of the WIT `connection` resource, and [`add_to_linker`].

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::{Dialect, Engine, SqlCaps, SqlConn, SqlError, SqlPools, Statement, Value};
use crate::bindings::kubesink::sink::sql as wit;

/// Per-store state of the `sql` capability for one sink.
#[derive(Debug, Clone)]
pub(crate) struct SqlCtx {
    sink: String,
    grants: Vec<String>,
    pools: SqlPools,
    caps: SqlCaps,
    /// The sink's host memory budget (result rows are charged to it).
    budget: crate::budget::HostBudget,
    /// The deadline of the call running now, if any: statements stop there.
    deadline: Option<std::time::Instant>,
}

impl SqlCtx {
    /// The capability for sink `sink`, which may open the connections named
    /// in `grants` (and only those that are also configured in `pools`);
    /// host memory it causes is reserved from `budget`.
    pub fn new(
        sink: impl Into<String>,
        grants: Vec<String>,
        pools: SqlPools,
        caps: SqlCaps,
        budget: crate::budget::HostBudget,
    ) -> Self {
        Self {
            sink: sink.into(),
            grants,
            pools,
            caps,
            budget,
            deadline: None,
        }
    }

    /// Sets the deadline of the call that starts now (`None` between calls).
    pub(crate) fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }

    /// Opens `name` if this sink is granted it and it is configured.
    pub fn open(&self, name: &str) -> Result<SqlConn, SqlError> {
        if !self.grants.iter().any(|g| g == name) {
            return Err(SqlError::Denied(format!(
                "sink '{}' is not granted sql connection '{name}'",
                self.sink
            )));
        }
        self.pools
            .for_sink(&self.sink, name, self.caps)
            .map(|c| c.with_budget(self.budget.clone()))
            .ok_or_else(|| {
                SqlError::Denied(format!(
                    "sink '{}': sql connection '{name}' is not configured on this host",
                    self.sink
                ))
            })
    }
}

/// Host side of the WIT `connection` resource.
#[derive(Debug)]
pub struct Connection {
    conn: SqlConn,
}

/// What the host functions of the capability borrow from the store.
pub(crate) struct SqlCtxView<'a> {
    /// The sink's grants and pools.
    pub ctx: &'a mut SqlCtx,
    /// The store's resource table (holds [`Connection`]s).
    pub table: &'a mut ResourceTable,
}

/// Implemented by store data that offers the `sql` capability.
pub(crate) trait SqlView: Send {
    /// Borrow the capability's state.
    fn sql(&mut self) -> SqlCtxView<'_>;
}

struct HasSql;

impl HasData for HasSql {
    type Data<'a> = SqlCtxView<'a>;
}

/// Adds `kubesink:sink/sql` to `linker`.
pub(crate) fn add_to_linker<T: SqlView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSql>(linker, T::sql)
}

impl SqlCtxView<'_> {
    fn conn(&self, handle: &Resource<Connection>) -> wasmtime::Result<SqlConn> {
        Ok(self
            .table
            .get(handle)?
            .conn
            .clone()
            .with_deadline(self.ctx.deadline))
    }
}

impl wit::Host for SqlCtxView<'_> {}

impl wit::HostConnection for SqlCtxView<'_> {
    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, SqlError>> {
        match self.ctx.open(&name) {
            Ok(conn) => {
                tracing::debug!(target: "kubesink::sink", sink = %self.ctx.sink, connection = %name, url = %conn.shown_url(), "sql connection opened");
                Ok(Ok(self.table.push(Connection { conn })?))
            }
            Err(err) => {
                tracing::warn!(target: "kubesink::sink", sink = %self.ctx.sink, connection = %name, error = ?err, "sql connection denied");
                Ok(Err(err))
            }
        }
    }

    async fn dialect(&mut self, this: Resource<Connection>) -> wasmtime::Result<Dialect> {
        let conn = self.conn(&this)?;
        conn.dialect().ok_or_else(|| {
            wasmtime::format_err!(
                "sink '{}': sql connection '{}' ({}) is PostgreSQL, which `connection.dialect` \
                 (kubesink:sink@0.2.0) cannot name: rebuild the sink against kubesink:sink@0.2.1 \
                 or later and call `connection.engine`",
                self.ctx.sink,
                conn.name(),
                conn.shown_url()
            )
        })
    }

    async fn engine(&mut self, this: Resource<Connection>) -> wasmtime::Result<Engine> {
        Ok(self.conn(&this)?.engine())
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.execute(&statement, &params).await)
    }

    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Vec<Vec<Value>>, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.query(&statement, &params).await)
    }

    async fn execute_batch(
        &mut self,
        this: Resource<Connection>,
        statements: Vec<Statement>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.execute_batch(&statements).await)
    }

    async fn execute_batch_packed(
        &mut self,
        this: Resource<Connection>,
        statements: Vec<u8>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.execute_batch_packed(&statements).await)
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
