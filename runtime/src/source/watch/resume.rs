//! A watch resumed from a checkpoint's frontier, before the listing.

use std::time::Duration;

use super::*;

/// How long a watch resumed from a checkpoint may be silent before it is
/// taken as caught up: the API server replays its history at once.
const RESUME_IDLE: Duration = Duration::from_millis(500);

/// Delivers to the checkpointed sinks every change of `r` after `from` (the
/// oldest of their frontiers) that the API server still has, in order, as
/// a watch from that resourceVersion; returns once caught up (the current
/// resourceVersion reached, or the watch silent for [`RESUME_IDLE`]). So a
/// log sink gets each update made while kubesink was down, not only the
/// newest state the listing shows. When the history is gone (410) or the
/// watch fails, the listing that follows delivers the newest state of
/// every object changed since.
pub(super) async fn resume(
    api: &Api<RawObject>,
    r: &Resource,
    from: u64,
    pipeline: &Pipeline,
    (normalizer, job_kinds, events): (&Normalizer, &[String], &EventFilter),
) {
    let name = watch_name(r);
    let gone = |reason: &str| {
        tracing::info!(resource = %name, from, reason, "cannot resume from the checkpoint; the listing delivers the newest state of what changed since");
    };
    let now = match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(list) => list
            .metadata
            .resource_version
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX),
        Err(e) => return gone(&sanitize(&e.to_string())),
    };
    if from >= now {
        return;
    }
    let stream = match api.watch(&WatchParams::default(), &from.to_string()).await {
        Ok(stream) => stream,
        Err(e) => return gone(&sanitize(&e.to_string())),
    };
    futures_util::pin_mut!(stream);
    let mut resumed = 0u64;
    loop {
        let event = match tokio::time::timeout(RESUME_IDLE, stream.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => return gone(&sanitize(&e.to_string())),
            Ok(None) | Err(_) => break,
        };
        let (object, removed) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(status) => return gone(&sanitize(&status.message)),
        };
        let version = object
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(entry) = entry_of(&object, r, removed, normalizer, job_kinds, events) {
            pipeline.send_resumed(entry).await;
            resumed += 1;
        }
        if version >= now {
            break;
        }
    }
    tracing::info!(resource = %name, from, resumed, "resumed from the checkpoint");
}
