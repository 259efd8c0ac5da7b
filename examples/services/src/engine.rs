//! The CPU-heavy work — decoding, detection, the quality and liveness gate, embedding — on a
//! bounded pool of blocking threads, never on the async executor. `workers` jobs run at once
//! and at most `queue` more wait; a job beyond that is refused at once ([`Busy`], which the
//! gateway answers with 503 and `Retry-After`) instead of joining an unbounded queue.

use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use tokio::sync::Semaphore;
use uniface::core::image::decode_rgb_named;
use uniface::core::liveness::LazyLivenessDetector;
use uniface::core::quality::{Policy, Reason};
use uniface::{FaceAnalyzer, ModelFingerprint, ModelStore, Template};

use crate::Result;

/// The pool is full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Largest image accepted, in pixels (a 12-megapixel photo fits with room to spare).
pub const MAX_PIXELS: u64 = 40_000_000;

/// A bounded pool of blocking threads: `workers` jobs at once, `queue` more waiting, the rest
/// refused at once.
#[derive(Debug, Clone)]
pub struct Pool {
    admit: Arc<Semaphore>,
    run: Arc<Semaphore>,
    capacity: usize,
}

impl Pool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            admit: Arc::new(Semaphore::new(workers + queue)),
            run: Arc::new(Semaphore::new(workers)),
            capacity: workers + queue,
        }
    }

    /// Jobs running or waiting now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admit.available_permits()
    }

    /// Run `f` on a blocking thread, or [`Busy`] at once when the pool is full.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::result::Result<R, Busy> {
        let admitted = self.admit.clone().try_acquire_owned().map_err(|_| Busy)?;
        let running = self.run.clone().acquire_owned().await.map_err(|_| Busy)?;
        let out = tokio::task::spawn_blocking(move || {
            let r = f();
            drop((running, admitted));
            r
        })
        .await;
        // a job that panicked is a bug; its caller gets a 503 rather than a dropped connection
        out.map_err(|_| Busy)
    }
}

/// Models and the bounded pool. `Send + Sync`; one per process.
pub struct Engine {
    analyzer: FaceAnalyzer,
    liveness: LazyLivenessDetector,
    pool: Pool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// The gate's verdict and, when it accepted, the template of the assessed face.
#[derive(Debug, Clone)]
pub struct Gated {
    pub reasons: Vec<Reason>,
    pub quality: Option<serde_json::Value>,
    pub liveness: Option<serde_json::Value>,
    pub template: Option<Template>,
}

/// One face found in a photo.
#[derive(Debug, Clone)]
pub struct Found {
    /// `[left, top, right, bottom]` in pixels.
    pub bbox: [i64; 4],
    pub template: Template,
}

impl Engine {
    /// Load the models from `store` (liveness models on first use).
    pub fn new(store: ModelStore, workers: usize, queue: usize) -> Result<Self> {
        let models = store.ensure()?;
        Ok(Self {
            analyzer: FaceAnalyzer::new(&models)?,
            liveness: LazyLivenessDetector::new(store),
            pool: Pool::new(workers, queue),
        })
    }

    /// The fingerprint of the templates this engine makes.
    pub fn fingerprint(&self) -> ModelFingerprint {
        ModelFingerprint::dlib_resnet_v1()
    }

    /// Jobs running or waiting now.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// Run `f` on the pool, or [`Busy`] at once when `workers + queue` jobs are in already.
    pub async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> std::result::Result<R, Busy> {
        let me = self.clone();
        self.pool.run(move || f(&me)).await
    }

    /// Decode an image, refusing more than [`MAX_PIXELS`] before decoding.
    fn decode(&self, bytes: &[u8]) -> Result<uniface::core::image::RgbImage> {
        Ok(decode_rgb_named("<request body>", bytes, MAX_PIXELS)?)
    }

    /// The enrollment gate on the photo's largest face, then its template when it passes.
    pub fn gate(&self, bytes: &[u8], policy: &Policy, liveness: bool) -> Result<Gated> {
        let img = self.decode(bytes)?;
        let live = match liveness || policy.require_live {
            true => Some(self.liveness.get()?),
            false => None,
        };
        let (a, face) = self.analyzer.assess_and_describe(&img, policy, live)?;
        Ok(Gated {
            reasons: a.reasons,
            quality: a
                .quality
                .map(|q| serde_json::to_value(q).unwrap_or_default()),
            liveness: a
                .liveness
                .map(|l| serde_json::json!({"score": l.score, "is_live": l.is_live})),
            template: face
                .map(|f| Template::new(self.fingerprint(), &f.embedding))
                .transpose()?,
        })
    }

    /// Every face of the photo (best detection first), or only the largest.
    pub fn faces(&self, bytes: &[u8], largest_only: bool) -> Result<Vec<Found>> {
        let img = self.decode(bytes)?;
        let faces = match largest_only {
            true => self
                .analyzer
                .analyze_selected(&img)?
                .map(|(f, _)| vec![f])
                .unwrap_or_default(),
            false => self.analyzer.analyze(&img)?,
        };
        faces
            .into_iter()
            .map(|f| {
                let r = f.bbox.rect();
                Ok(Found {
                    bbox: [r.left, r.top, r.right, r.bottom],
                    template: Template::new(self.fingerprint(), &f.embedding)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_pool_refuses_at_once_and_takes_jobs_again_when_they_finish() {
        let pool = Pool::new(1, 2);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        // one job running (blocked on the channel), two waiting
        let mut jobs = Vec::new();
        for _ in 0..3 {
            let (pool, rx) = (pool.clone(), rx.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(move || rx.lock().unwrap().recv().unwrap()).await
            }));
        }
        while pool.in_flight() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // the fourth is refused without waiting (were it to wait, it would wait for ever: the
        // jobs ahead of it finish only below)
        let fourth = tokio::time::timeout(Duration::from_secs(30), pool.run(|| ())).await;
        assert_eq!(fourth, Ok(Err(Busy)));
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        for j in jobs {
            assert_eq!(j.await.unwrap(), Ok(()));
        }
        assert_eq!(pool.in_flight(), 0);
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
