//! kubesink's end-to-end tests: one test binary, one module per area.
//! Tests that need a service say so in their name and start it (or fail
//! loudly); none skips itself.

mod cluster;
mod host;
mod isolation;
mod live;
mod mariadb;
mod mysql_sink;
mod replay;
mod sls;
