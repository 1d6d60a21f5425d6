//! Logs through tracing: human lines by default, or JSON lines for Cloud
//! Logging with `severity`, `message`, the event's fields and every field of
//! the enclosing spans flattened in (the core's `worker` span gives
//! `worker_id`, its `job` span `job_id`, `epoch`, `attempt`, `kind`).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::util::wall_now;

/// Installs the global subscriber; logs go to stderr so command output on
/// stdout stays clean for pipes.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(CloudJson)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("could not install the logger: {e}"))
}

static WORKER_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Adds `worker_id` to every JSON line that does not carry one.
///
/// The core runs each attempt in a spawned task whose `job` span is not a
/// child of the `worker` span, so job lines have job_id, epoch and attempt but
/// not worker_id; one process runs one worker, so the process supplies it.
pub fn set_worker_id(id: &str) {
    let _ = WORKER_ID.set(id.to_owned());
}

/// Cloud Logging's severity names.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// One JSON object per event (see the module docs).
pub struct CloudJson;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut out = Map::new();
        out.insert("timestamp".into(), wall_now().to_string().into());
        out.insert("severity".into(), severity(meta.level()).into());
        // Span fields, outermost first, so an inner span's field wins.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                        out.extend(map);
                    }
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        if let Some(message) = fields.remove("message") {
            out.insert("message".into(), message);
        }
        out.extend(fields);
        out.insert("target".into(), meta.target().into());
        if let Some(id) = WORKER_ID.get() {
            out.entry("worker_id").or_insert_with(|| id.clone().into());
        }
        writeln!(writer, "{}", Value::Object(out))
    }
}
