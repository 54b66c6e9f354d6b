//! The one Event publisher: every Event countersign writes, planned by the core, its note
//! made inert and bounded here (the API server keeps 1 KiB of it).

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::core::inert;
use crate::core::plan::{EventKind, PlannedEvent};

/// The longest note kept.
const MAX_NOTE_CHARS: usize = 1000;

/// Publishes Events as countersign, this replica.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, replica: &str) -> Events {
        let reporter = Reporter {
            controller: "countersign".into(),
            instance: Some(replica.to_string()),
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publish in the background: an Event never delays or changes an answer.
    pub fn publish(&self, planned: PlannedEvent) {
        let events = self.clone();
        tokio::spawn(async move { events.publish_now(planned).await });
    }

    /// Publish and wait for it (a failure is logged: Events are best effort).
    pub async fn publish_now(&self, planned: PlannedEvent) {
        let event = Event {
            type_: match planned.kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: planned.reason,
            note: Some(inert::bounded(&planned.note, MAX_NOTE_CHARS)),
            action: planned.action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &planned.regarding).await {
            tracing::debug!(%error, "could not publish an Event");
        }
    }
}
