//! Hostile test guest `hostile`: one misbehaviour per `mode` setting, run in
//! `write` (or in `init` for `mode=init-*`), so the e2e tests can show that
//! the host contains each one. Built against `http-sink-world`, so it may
//! import `wasi:http` as well as everything a `wasm32-wasip2` program links
//! (filesystem, environment, sockets, clocks): the host links them all and
//! denies them at run time.
//!
//! Settings: `mode` (required), `url` (the target of the HTTP modes),
//! `port` and `udp_port` (the targets of `sockets`), `bytes` (the size of the `big-*`
//! payloads), `connection` (the SQL connection of `big-statement` and
//! `sql-denied`; default `main`), `path` and `sql` (the SQL modes of
//! [`sql_probes`]).
//!
//! Modes that *probe* the sandbox (`files`, `env`, `sockets`, `http-denied`,
//! `sql-denied`, `big-statement` (with a malformed statement too), `big-body`) try every attempt and then
//! return `error.fatal` with one line per attempt: `DENIED <what>: <error>`
//! when the host refused it, `ESCAPED <what>: <result>` when it did not. A
//! test asserts that every line is `DENIED` (the guest cannot tell the test
//! anything else: its stdout is rate-limited and tagged by the host).
//!
//! Modes that *misbehave*: `sleep` (`std::thread::sleep` for a day),
//! `hang-clock` (blocks on a monotonic-clock pollable a century away),
//! `hang-http` (waits for the response of a server that never answers),
//! `retryable` (every write returns `error.retryable`), `fatal` (every
//! write returns `error.fatal`), `ok` (every write succeeds).

// wit-bindgen's generated canonical-ABI glue (exports, lifting, lowering)
// is unsafe code by nature; nothing hand-written here is.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "http-sink-world", generate_all });

    use super::Hostile;
    export!(Hostile);
}

mod http_probes;
mod sql_probes;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::time::Duration;

use bindings::exports::kubesink::sink::sink::Guest;
use bindings::kubesink::sink::sql::{Connection, Value};
use bindings::kubesink::sink::types::{Change, Error, HeldPage, RecordKind, Shape, Wants};
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::http::outgoing_handler;
use bindings::wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

#[derive(Default, Clone)]
struct Settings {
    mode: String,
    url: String,
    port: u16,
    udp_port: u16,
    bytes: usize,
    connection: String,
    /// `sql-escape`: a directory to aim at; `sql-session`: statements.
    path: String,
    sql: String,
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
}

/// Outcomes of the attempts of one probing mode.
#[derive(Default)]
struct Probe(Vec<String>);

impl Probe {
    fn denied(&mut self, what: &str, why: impl std::fmt::Debug) {
        self.0.push(format!("DENIED {what}: {why:?}"));
    }

    fn escaped(&mut self, what: &str, result: impl std::fmt::Debug) {
        self.0.push(format!("ESCAPED {what}: {result:?}"));
    }

    fn check<T: std::fmt::Debug, E: std::fmt::Debug>(&mut self, what: &str, r: Result<T, E>) {
        match r {
            Ok(v) => self.escaped(what, v),
            Err(e) => self.denied(what, e),
        }
    }

    fn finish(self) -> Result<(), Error> {
        Err(Error::Fatal(self.0.join("\n")))
    }
}

fn files(p: &mut Probe) {
    p.check("read /etc/passwd", std::fs::read_to_string("/etc/passwd"));
    p.check("read_dir /", std::fs::read_dir("/").map(|d| d.count()));
    p.check("read_dir .", std::fs::read_dir(".").map(|d| d.count()));
    p.check(
        "create /tmp/kubesink-hostile",
        std::fs::write("/tmp/kubesink-hostile", b"x"),
    );
    p.check("create ./escape", std::fs::write("escape", b"x"));
    p.check(
        "open /proc/self/environ",
        std::fs::File::open("/proc/self/environ").and_then(|mut f| {
            let mut s = String::new();
            f.read_to_string(&mut s).map(|_| s.len())
        }),
    );
}

fn env(p: &mut Probe) {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    if vars.is_empty() {
        p.denied("environment variables", "none visible");
    } else {
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        p.escaped("environment variables", names);
    }
    for name in ["PATH", "HOME", "MYSQL_PASSWORD", "KUBESINK_TEST_SECRET"] {
        p.check(&format!("env var {name}"), std::env::var(name));
    }
    let args: Vec<String> = std::env::args().collect();
    if args.is_empty() {
        p.denied("arguments", "none visible");
    } else {
        p.escaped("arguments", args);
    }
    // (`std::env::current_dir` is not probed: wasi-libc answers "/" from
    // its own state, without asking the host for anything.)
}

fn sockets(p: &mut Probe, port: u16, udp_port: u16) {
    let timeout = Duration::from_secs(2);
    p.check(
        &format!("tcp connect 127.0.0.1:{port}"),
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
            .and_then(|mut s| s.write_all(b"escaped\n")),
    );
    p.check(
        "tcp listen 0.0.0.0:0",
        std::net::TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()),
    );
    p.check(
        &format!("udp send 127.0.0.1:{udp_port}"),
        std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(b"escaped", ("127.0.0.1", udp_port))),
    );
    p.check(
        "dns lookup localhost",
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80)).map(|a| a.count()),
    );
}

/// Splits `http://host:port/path` into scheme, authority and path.
fn split_url(url: &str) -> Result<(Scheme, String, String), Error> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(Error::Fatal(format!("setting url={url}: not http(s)")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((scheme, authority.to_string(), path.to_string()))
}

/// A POST request to `url` with `headers`, and its body to write.
fn post_request(url: &str, headers: Fields) -> Result<(OutgoingRequest, OutgoingBody), Error> {
    let (scheme, authority, path) = split_url(url)?;
    let req = OutgoingRequest::new(headers);
    let bad = |what: &str| Error::Fatal(format!("cannot set the request's {what}"));
    req.set_method(&Method::Post).map_err(|()| bad("method"))?;
    req.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    req.set_authority(Some(&authority))
        .map_err(|()| bad("authority"))?;
    req.set_path_with_query(Some(&path))
        .map_err(|()| bad("path"))?;
    let body = req.body().map_err(|()| bad("body"))?;
    Ok((req, body))
}

/// POSTs `body` to `url` and waits for the response status.
fn post(url: &str, body: &[u8]) -> Result<Result<u16, String>, Error> {
    let (req, out) = post_request(url, Fields::new())?;
    let future = match outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(code) => return Ok(Err(format!("handle: {code:?}"))),
    };
    let mut write_error = None;
    if let Ok(stream) = out.write() {
        for chunk in body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(format!("body write: {e:?}"));
                break;
            }
        }
    }
    if let Err(e) = OutgoingBody::finish(out, None) {
        write_error.get_or_insert(format!("body finish: {e:?}"));
    }
    future.subscribe().block();
    Ok(match future.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(code))) => Err(format!("{code:?}")),
        Some(Err(())) | None => Err(write_error.unwrap_or_else(|| "no response".into())),
    })
}

fn sql_probe(p: &mut Probe, s: &Settings, big: bool) {
    let conn = match Connection::open(&s.connection) {
        Ok(c) => c,
        Err(e) => return p.denied(&format!("open sql connection {}", s.connection), e),
    };
    if !big {
        return p.escaped(&format!("open sql connection {}", s.connection), "opened");
    }
    // A statement of `bytes` bytes: a long comment, then a harmless query.
    let statement = format!("SELECT 1 /* {} */", "x".repeat(s.bytes));
    p.check(
        &format!("statement of {} bytes", statement.len()),
        conn.execute(&statement, &[]),
    );
    let param = Value::Text("y".repeat(s.bytes));
    p.check(
        &format!("parameter of {} bytes", s.bytes),
        conn.execute("SELECT ?", &[param]),
    );
    // An error the database itself raises (its message passes through the
    // host, which must keep the credentials out of it).
    p.check(
        "malformed statement",
        conn.execute("SELEKT * FROM nowhere", &[]),
    );
}

fn run(s: &Settings, batch_len: usize) -> Result<(), Error> {
    let mut p = Probe::default();
    match s.mode.as_str() {
        "ok" => Ok(()),
        "retryable" => Err(Error::Retryable(format!(
            "hostile guest: always retryable ({batch_len} entries)"
        ))),
        "fatal" => Err(Error::Fatal(format!(
            "hostile guest: always fatal ({batch_len} entries)"
        ))),
        "files" => {
            files(&mut p);
            p.finish()
        }
        "env" => {
            env(&mut p);
            p.finish()
        }
        "sockets" => {
            sockets(&mut p, s.port, s.udp_port);
            p.finish()
        }
        "http-denied" => {
            let r = post(&s.url, b"{\"stolen\":true}")?;
            p.check(&format!("POST {}", s.url), r);
            p.finish()
        }
        "big-body" => {
            let r = post(&s.url, &vec![b'z'; s.bytes])?;
            p.check(&format!("POST {} bytes to {}", s.bytes, s.url), r);
            p.finish()
        }
        "sql-denied" => {
            sql_probe(&mut p, s, false);
            p.finish()
        }
        "big-statement" => {
            sql_probe(&mut p, s, true);
            p.finish()
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(86_400));
            Err(Error::Fatal("hostile guest: woke up after a day".into()))
        }
        "hang-clock" => {
            // About a century, in nanoseconds.
            monotonic_clock::subscribe_duration(100 * 365 * 86_400 * 1_000_000_000).block();
            Err(Error::Fatal("hostile guest: the century passed".into()))
        }
        "hang-http" => {
            let r = post(&s.url, b"hello")?;
            Err(Error::Fatal(format!(
                "hostile guest: the silent server answered: {r:?}"
            )))
        }
        m if m.starts_with("http-probe-") => http_probes::run(m, s),
        m if sql_probes::MODES.contains(&m) => sql_probes::run(s),
        other => Err(Error::Fatal(format!("unknown mode {other}"))),
    }
}

struct Hostile;

impl Guest for Hostile {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        let mut s = Settings {
            connection: "main".into(),
            bytes: 1 << 20,
            ..Settings::default()
        };
        for (k, v) in settings {
            let bad = |e: &dyn std::fmt::Display| Error::Fatal(format!("setting {k}={v}: {e}"));
            match k.as_str() {
                "mode" => s.mode = v,
                "url" => s.url = v,
                "connection" => s.connection = v,
                "path" => s.path = v,
                "sql" => s.sql = v,
                "port" => s.port = v.parse().map_err(|e| bad(&e))?,
                "udp_port" => s.udp_port = v.parse().map_err(|e| bad(&e))?,
                "bytes" => s.bytes = v.parse().map_err(|e| bad(&e))?,
                other => return Err(Error::Fatal(format!("unknown setting {other}"))),
            }
        }
        if s.mode.is_empty() {
            return Err(Error::Fatal("setting mode is required".into()));
        }
        let result = match s.mode.strip_prefix("init-") {
            Some(mode) => run(
                &Settings {
                    mode: mode.to_string(),
                    ..s.clone()
                },
                0,
            ),
            None => Ok(()),
        };
        SETTINGS.with_borrow_mut(|c| *c = s);
        result.map(|()| kubesink_guest_common::log_wants!())
    }

    kubesink_guest_common::nothing_held!();

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        let s = SETTINGS.with_borrow(Settings::clone);
        if s.mode.starts_with("init-") {
            return Ok(());
        }
        run(&s, batch.len())
    }
}
