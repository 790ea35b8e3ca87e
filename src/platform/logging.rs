//! Logs on stdout: one JSON object per line with `time`, `level`, `target`, `message`,
//! `request_id` and `role`, plus any structured key-values of the log call — or the same as
//! one readable text line when a person is watching (`log.format = "auto"` and a terminal).
//!
//! The request id and role ride in a task-local set by the request middleware, so every log line
//! written while serving a request carries them without handlers passing them around.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::kv::{self, VisitSource};
use serde_json::{Map, Value};

use crate::config::LogFormat;

/// Set when the host starts stopping (see [`stopping`]).
static STOPPING: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// What identifies the request being served, for logs and propagation to other roles.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub role: &'static str,
}

/// The context of the request the current task serves, if any.
pub fn current_context() -> Option<RequestContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// Runs `future` with `context` visible to every log line it writes.
pub async fn with_context<F: std::future::Future>(context: RequestContext, future: F) -> F::Output {
    CONTEXT.scope(context, future).await
}

/// Installs the process logger. Safe to call twice (tests): the second call changes nothing.
pub fn init(filter: &str, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(filter).target(env_logger::Target::Stdout);
    match resolve(format, std::io::stdout().is_terminal()) {
        LogFormat::Text => builder.format(|buf, record| match is_stop_noise(record) {
            true => Ok(()),
            false => writeln!(buf, "{}", text_line(record)),
        }),
        _ => builder.format(|buf, record| match is_stop_noise(record) {
            true => Ok(()),
            false => writeln!(buf, "{}", json_line(record)),
        }),
    };
    let _ = builder.try_init();
}

/// Records that the process is stopping on purpose, so that what a deliberate stop causes is
/// not reported as a failure (see [`is_stop_noise`]).
pub fn stopping() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// actix's accept thread logs "No workers" at error when a connection reaches a listener whose
/// workers have stopped. While the process runs, that is a real failure (every worker died);
/// during a deliberate stop it only means a connection arrived as the listener was closing —
/// a call one of this process's own background tasks had opened just before it was stopped.
fn is_stop_noise(record: &log::Record<'_>) -> bool {
    STOPPING.load(Ordering::Relaxed)
        && record.target() == "actix_server::accept"
        && record.args().as_str() == Some("No workers")
}

/// The format `auto` stands for: text for a person at a terminal, JSON for a pipe or a file
/// (a log collector, systemd's journal, a container runtime).
pub fn resolve(format: LogFormat, stdout_is_terminal: bool) -> LogFormat {
    match format {
        LogFormat::Auto if stdout_is_terminal => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    }
}

fn json_line(record: &log::Record<'_>) -> String {
    let mut line = Map::new();
    line.insert("time".into(), now().into());
    line.insert("level".into(), record.level().as_str().into());
    line.insert("target".into(), record.target().into());
    line.insert("message".into(), record.args().to_string().into());
    if let Some(context) = current_context() {
        line.insert("request_id".into(), context.request_id.as_ref().into());
        line.insert("role".into(), context.role.into());
    }
    let mut fields = JsonFields(&mut line);
    let _ = record.key_values().visit(&mut fields);
    Value::Object(line).to_string()
}

fn text_line(record: &log::Record<'_>) -> String {
    let mut line = format!("{} {:<5} {} ", now(), record.level(), record.target());
    if let Some(context) = current_context() {
        line.push_str(&format!("[{} {}] ", context.role, context.request_id));
    }
    line.push_str(&record.args().to_string());
    let mut fields = Map::new();
    let _ = record.key_values().visit(&mut JsonFields(&mut fields));
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

fn now() -> String {
    super::time::now()
}

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            Value::from(n)
        } else if let Some(n) = value.to_i64() {
            Value::from(n)
        } else if let Some(f) = value.to_f64() {
            Value::from(f)
        } else if let Some(b) = value.to_bool() {
            Value::from(b)
        } else {
            Value::from(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deliberate_stop_silences_actix_losing_its_workers() {
        let record = |target: &'static str| {
            log::Record::builder()
                .args(format_args!("No workers"))
                .target(target)
                .level(log::Level::Error)
                .build()
        };
        assert!(!is_stop_noise(&record("actix_server::accept")), "a real failure while running");
        stopping();
        assert!(is_stop_noise(&record("actix_server::accept")));
        assert!(!is_stop_noise(&record("fountain::server")));
    }

    #[test]
    fn auto_is_text_on_a_terminal_and_json_otherwise() {
        assert_eq!(resolve(LogFormat::Auto, true), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Auto, false), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Json, true), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Text, false), LogFormat::Text);
    }

    #[tokio::test]
    async fn json_lines_carry_request_context_and_fields() {
        let context = RequestContext { request_id: Arc::from("req-1"), role: "kms" };
        let line = with_context(context, async {
            let args = format_args!("listening");
            let kvs: [(&str, kv::Value<'_>); 2] =
                [("port", kv::Value::from(8003u64)), ("addr", kv::Value::from("127.0.0.1"))];
            let record = log::Record::builder()
                .args(args)
                .level(log::Level::Info)
                .target("fountain::server")
                .key_values(&kvs)
                .build();
            json_line(&record)
        })
        .await;
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "fountain::server");
        assert_eq!(value["message"], "listening");
        assert_eq!(value["request_id"], "req-1");
        assert_eq!(value["role"], "kms");
        assert_eq!(value["port"], 8003);
        assert_eq!(value["addr"], "127.0.0.1");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
    }
}
