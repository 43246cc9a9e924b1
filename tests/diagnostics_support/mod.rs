//! A small `tracing` subscriber that keeps every event with its fields, for the diagnostics tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};

/// One event as it was emitted: level, target, and every field as text (`message` included).
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: Level,
    pub target: String,
    pub fields: HashMap<String, String>,
}

impl Captured {
    pub fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("event {self:?} has no field {name}"))
    }

    pub fn number(&self, name: &str) -> u64 {
        self.field(name)
            .parse()
            .unwrap_or_else(|_| panic!("field {name} of {self:?} is not a number"))
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            fields,
        });
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// Runs `f` with a capturing subscriber as this thread's default; returns its result and the
/// events with target `segpool` it emitted on this thread.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Captured>) {
    let c = Capture::default();
    let r = tracing::subscriber::with_default(c.clone(), f);
    let events =
        c.0.lock()
            .unwrap()
            .iter()
            .filter(|e| e.target == "segpool")
            .cloned()
            .collect();
    (r, events)
}

/// The events whose message is `message`.
pub fn named<'a>(events: &'a [Captured], message: &str) -> Vec<&'a Captured> {
    events.iter().filter(|e| e.message() == message).collect()
}
