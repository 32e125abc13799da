//! A batching span processor that can never slow a request down, and counts
//! what it could not deliver.
//!
//! The SDK's own `BatchSpanProcessor` is bounded too, but it keeps its drop
//! count to itself (it logs it once, at shutdown). Here the ended span is
//! offered to a bounded channel with `try_send`: when the queue is full the
//! span is dropped and counted, and the request goes on. One Tokio task takes
//! batches off the queue and exports them, each under a deadline, so a
//! collector that is down or slow costs spans, never latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// What happened to the spans that ended.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (the collector is slower
    /// than the traffic, or away).
    pub dropped_queue_full: AtomicU64,
    /// Spans in batches the collector refused or did not answer in time.
    pub dropped_export_failed: AtomicU64,
    /// Spans still queued when the shutdown flush ran out of time.
    pub dropped_at_shutdown: AtomicU64,
}

impl ExportStats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The queue's settings, from the standard `OTEL_BSP_*` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `OTEL_BSP_MAX_QUEUE_SIZE` (2048): spans waiting for export.
    pub max_queue_size: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY` in ms (5000): the longest a span waits.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512).
    pub max_export_batch_size: usize,
    /// `OTEL_BSP_EXPORT_TIMEOUT` in ms (30000): the deadline of one export.
    pub export_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_queue_size: 2048,
            schedule_delay: Duration::from_secs(5),
            max_export_batch_size: 512,
            export_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Reads the variables through `var`; a malformed one is an error, not
    /// a silent default.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .with_context(|| format!("{name} must be a whole number, got {v:?}"))
                })
                .transpose()
        };
        let size = |name: &str, default: usize| -> anyhow::Result<usize> {
            Ok(number(name)?.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX)).max(1))
        };
        let millis = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(number(name)?.map_or(default, Duration::from_millis))
        };
        let defaults = Self::default();
        let max_queue_size = size("OTEL_BSP_MAX_QUEUE_SIZE", defaults.max_queue_size)?;
        Ok(Self {
            max_queue_size,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", defaults.schedule_delay)?
                .max(Duration::from_millis(1)),
            // The specification: a batch larger than the queue is the queue.
            max_export_batch_size: size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", defaults.max_export_batch_size)?
                .min(max_queue_size),
            export_timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", defaults.export_timeout)?,
        })
    }
}

/// The processor the tracer provider calls as spans end.
#[derive(Debug)]
pub struct BoundedBatcher {
    spans: mpsc::Sender<SpanData>,
    stats: Arc<ExportStats>,
}

/// The exporting task's handle: its counters and its flush.
#[derive(Debug)]
pub struct Handle {
    pub(crate) stats: Arc<ExportStats>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    spans: mpsc::WeakSender<SpanData>,
}

impl BoundedBatcher {
    /// Spawns the exporting task on the current Tokio runtime.
    pub fn start<E>(exporter: E, config: Config) -> (Self, Handle)
    where
        E: SpanExporter + 'static,
    {
        let (spans, queue) = mpsc::channel(config.max_queue_size);
        let (flush, flushes) = mpsc::channel(1);
        let stats = Arc::new(ExportStats::default());
        let task = Task { exporter, config, stats: stats.clone(), batch: Vec::new(), failing: false };
        tokio::spawn(task.run(queue, flushes));
        let handle = Handle { stats: stats.clone(), flush, spans: spans.downgrade() };
        (Self { spans, stats }, handle)
    }
}

impl SpanProcessor for BoundedBatcher {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            ExportStats::add(&self.stats.dropped_queue_full, 1);
        }
    }

    /// Flushing is async here: see [`Handle::flush`].
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Handle {
    /// Exports everything queued, waiting at most `bound`. What is still
    /// queued after that is counted as dropped at shutdown.
    pub async fn flush(&self, bound: Duration) {
        let (done, finished) = oneshot::channel();
        let flushed = async {
            self.flush.send(done).await.ok()?;
            finished.await.ok()
        };
        if tokio::time::timeout(bound, flushed).await.is_err() {
            let left = self.spans.upgrade().map_or(0, |s| s.max_capacity() - s.capacity());
            ExportStats::add(&self.stats.dropped_at_shutdown, left);
            tracing::warn!(
                bound = ?bound,
                left,
                "the span export did not finish in time; the rest of the spans are dropped"
            );
        }
    }
}

struct Task<E> {
    exporter: E,
    config: Config,
    stats: Arc<ExportStats>,
    batch: Vec<SpanData>,
    failing: bool,
}

impl<E: SpanExporter> Task<E> {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<SpanData>,
        mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut tick = tokio::time::interval(self.config.schedule_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(done) = flushes.recv() => {
                    while let Ok(span) = queue.try_recv() {
                        self.push(span).await;
                    }
                    self.export().await;
                    let _ = done.send(());
                }
                span = queue.recv() => {
                    let Some(span) = span else {
                        self.export().await;
                        return;
                    };
                    self.push(span).await;
                }
                _ = tick.tick() => self.export().await,
            }
        }
    }

    async fn push(&mut self, span: SpanData) {
        self.batch.push(span);
        if self.batch.len() >= self.config.max_export_batch_size {
            self.export().await;
        }
    }

    async fn export(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.config.max_export_batch_size));
        let n = batch.len();
        let error = match tokio::time::timeout(self.config.export_timeout, self.exporter.export(batch)).await
        {
            Ok(Ok(())) => {
                ExportStats::add(&self.stats.exported, n);
                self.failing = false;
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {:?}", self.config.export_timeout),
        };
        ExportStats::add(&self.stats.dropped_export_failed, n);
        // Once per failing stretch, not once per batch: the counter says how many.
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(spans = n, error, "the span export failed; spans are dropped until it recovers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_variables_set_the_queue_and_bad_ones_are_refused() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(Config::from_lookup(env(&[])).expect("defaults"), Config::default());
        let config = Config::from_lookup(env(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "200"),
        ]))
        .expect("valid");
        assert_eq!(config.max_queue_size, 16);
        assert_eq!(config.schedule_delay, Duration::from_millis(50));
        assert_eq!(config.max_export_batch_size, 16, "a batch is never larger than the queue");
        assert_eq!(config.export_timeout, Duration::from_millis(200));
        let err = Config::from_lookup(env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")])).expect_err("refused");
        assert!(err.to_string().contains("OTEL_BSP_MAX_QUEUE_SIZE"), "{err}");
    }
}
