//! A lagging sink's catch-up: every resource it receives listed again, in
//! pages, for that sink alone, then reconciled against what it holds.

use std::sync::Arc;

use super::*;

/// What a catch-up needs: how to list, and the filters of the watches.
pub(super) struct CatchUp {
    pub(super) client: Client,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) normalizer: Normalizer,
    pub(super) job_kinds: Vec<String>,
    pub(super) events: EventFilter,
    pub(super) namespace: Option<String>,
    pub(super) resources: Vec<Resource>,
}

/// Objects per page of a catch-up's listing.
const CATCH_UP_PAGE: u32 = 500;

/// Runs a catch-up for each sink named by `requests`, each in its own task
/// (one sink's catch-up never waits for another's); stopping this stops
/// them.
pub(super) async fn serve_catch_ups(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<String>,
    cx: Arc<CatchUp>,
) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(sink) => {
                    running.spawn(catch_up(sink, cx.clone()));
                }
                None => break,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
    while running.join_next().await.is_some() {}
}

/// Catches sink `sink` up, retrying a failed listing or reconciliation
/// with backoff while it is still catching up.
async fn catch_up(sink: String, cx: Arc<CatchUp>) {
    use crate::pipeline::lag::LagState;
    let mut backoff = crate::pipeline::backoff::Backoff::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    loop {
        let started = std::time::Instant::now();
        match catch_up_once(&sink, &cx).await {
            Ok(Some((listed, removed))) => {
                if cx.pipeline.caught_up(&sink) {
                    tracing::info!(%sink, listed, removed, took = ?started.elapsed(), "catch-up delivered and reconciled");
                } else {
                    tracing::info!(%sink, "fell behind again while catching up; catches up again once its queue is delivered");
                }
                return;
            }
            Ok(None) => {
                tracing::info!(%sink, "fell behind again while catching up; catches up again once its queue is delivered");
                return;
            }
            Err(message) => {
                if cx.pipeline.lag_state(&sink) != Some(LagState::CatchingUp) {
                    return;
                }
                let delay = backoff.next_delay();
                tracing::warn!(%sink, %message, retry_in = ?delay, "catch-up failed; trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One catch-up of `sink`: every resource it receives is listed and queued
/// for it alone, then what it holds is reconciled. `Ok(None)` when it fell
/// behind again meanwhile; else how many objects were listed and how many
/// tombstones queued.
async fn catch_up_once(sink: &str, cx: &CatchUp) -> Result<Option<(usize, usize)>, String> {
    let kinds = cx.pipeline.sink_kinds(sink);
    let mut listed: [HashSet<String>; 3] = Default::default();
    let slot = |k: RecordKind| match k {
        RecordKind::Job => 0,
        RecordKind::Pod => 1,
        RecordKind::Event => 2,
    };
    let mut count = 0;
    // Job resources that are served but could not be listed: as in
    // `jobs.rs`, jobs are then not reconciled (a held uid has no kind).
    let mut jobs_blocked = Vec::new();
    for r in &cx.resources {
        let kind = match r.resource.kind.as_str() {
            "Pod" => RecordKind::Pod,
            "Event" => RecordKind::Event,
            _ => RecordKind::Job,
        };
        if !kinds.contains(&kind) {
            continue;
        }
        let api: Api<RawObject> = match &cx.namespace {
            Some(ns) => Api::namespaced_with(cx.client.clone(), ns, &r.resource),
            None => Api::all_with(cx.client.clone(), &r.resource),
        };
        let mut params = ListParams::default().limit(CATCH_UP_PAGE);
        loop {
            let page = match api.list(&params).await {
                Ok(page) => page,
                // Not served (a CRD not installed): none of it exists.
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                Err(e) if kind == RecordKind::Job => {
                    tracing::warn!(%sink, resource = %watch_name(r), error = %e, "catch-up cannot list this job resource; the sink's jobs are not reconciled this time");
                    jobs_blocked.push(watch_name(r));
                    break;
                }
                Err(e) => return Err(format!("listing {}: {e}", watch_name(r))),
            };
            for object in &page.items {
                if let Some(uid) = object.metadata.uid.as_deref() {
                    listed[slot(kind)].insert(uid.to_owned());
                }
                let Some(entry) =
                    entry_of(object, r, false, &cx.normalizer, &cx.job_kinds, &cx.events)
                else {
                    continue;
                };
                if !cx.pipeline.send_to(sink, entry).await {
                    return Ok(None);
                }
                count += 1;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    let at = now();
    let mut removed = 0;
    for kind in kinds {
        if kind == RecordKind::Job && !jobs_blocked.is_empty() {
            continue;
        }
        removed += cx
            .pipeline
            .reconcile_sink(sink, kind, &listed[slot(kind)], at)
            .await?;
    }
    Ok(Some((count, removed)))
}
