//! What the handlers and the worker share: the uploaded photos, the jobs with their status, and
//! the queue. One mutex guards it all (every operation under it is a few map look-ups); each job's
//! status is also published on a `watch` channel, which its event stream follows.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use image::RgbImage;
use inversion::EditOptions;
use serde::Serialize;
use tokio::sync::watch;

use super::limits::{MAX_FINISHED_JOBS, MAX_IMAGES, MAX_QUEUE};
use super::request::EditRequest;

/// An uploaded photo, decoded; its id is a digest of its bytes, so the same file is one photo.
pub struct Photo {
    pub id: String,
    /// The name the client gave, for the equivalent command only (never a path here).
    pub name: String,
    pub image: RgbImage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl State {
    pub fn is_final(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Cancelled)
    }
}

/// A job's status, as `GET /api/jobs/{id}` and its event stream give it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: String,
    pub image: String,
    pub state: State,
    /// Jobs ahead of this one in the queue (0: next), while it is queued.
    pub position: Option<usize>,
    /// The order jobs were accepted in, and the order they started in (the same, unless
    /// cancelled ones are skipped).
    pub submitted: u64,
    pub started: Option<u64>,
    /// `encode`, `inversion`, `sampling` or `decode`, while it runs.
    pub phase: Option<&'static str>,
    pub step: usize,
    pub total: usize,
    /// The share of the job's work done, in [0, 1].
    pub fraction: f64,
    pub elapsed_s: f64,
    pub eta_s: Option<f64>,
    /// Whether the photo's inversion was kept from an earlier job.
    pub inversion_reused: bool,
    /// UNet evaluations this job ran, and those the kept inversion saved it.
    pub unet_calls: u64,
    pub unet_calls_saved: u64,
    /// Counts the previews made; `GET …/preview.png` gives the latest.
    pub preview: u64,
    pub error: Option<String>,
    /// The `ddim-edit edit` command that gives the same PNG.
    pub command: String,
    pub settings: EditRequest,
}

/// A job: what to run, and what it has produced so far.
pub struct Job {
    pub photo: Arc<Photo>,
    pub request: EditRequest,
    pub options: EditOptions,
    pub cancel: Arc<AtomicBool>,
    pub status: watch::Sender<Status>,
    pub preview: Option<Arc<Vec<u8>>>,
    pub result: Option<Arc<Vec<u8>>>,
}

#[derive(Default)]
pub struct Inner {
    images: HashMap<String, Arc<Photo>>,
    /// Least recently used first.
    image_order: VecDeque<String>,
    pub jobs: HashMap<String, Job>,
    pub queue: VecDeque<String>,
    finished: VecDeque<String>,
    pub shutdown: bool,
    submitted: u64,
    started: u64,
}

#[derive(Default)]
pub struct Shared {
    inner: Mutex<Inner>,
    wake: Condvar,
}

/// A random 128-bit id in hex: the std hasher's per-instance random keys, twice.
pub fn random_id() -> String {
    let half = || RandomState::new().hash_one(std::time::Instant::now());
    format!("{:016x}{:016x}", half(), half())
}

impl Shared {
    /// The state, even if a thread panicked while holding it (every update leaves it whole).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_photo(&self, photo: Photo) -> Arc<Photo> {
        let mut s = self.lock();
        let photo = Arc::new(photo);
        s.image_order.retain(|id| id != &photo.id);
        s.image_order.push_back(photo.id.clone());
        s.images.insert(photo.id.clone(), photo.clone());
        while s.image_order.len() > MAX_IMAGES {
            if let Some(old) = s.image_order.pop_front() {
                s.images.remove(&old);
            }
        }
        photo
    }

    pub fn photo(&self, id: &str) -> Option<Arc<Photo>> {
        let mut s = self.lock();
        let photo = s.images.get(id).cloned()?;
        s.image_order.retain(|i| i != id);
        s.image_order.push_back(id.to_string());
        Some(photo)
    }

    /// Queues a job, or says why not (the queue is full, or the server is stopping).
    pub fn submit(&self, id: String, job: Job) -> Result<Status, &'static str> {
        let mut s = self.lock();
        if s.shutdown {
            return Err("the server is shutting down");
        }
        if s.queue.len() >= MAX_QUEUE {
            return Err("the queue is full");
        }
        s.submitted += 1;
        let n = s.submitted;
        job.status.send_modify(|st| st.submitted = n);
        s.queue.push_back(id.clone());
        s.jobs.insert(id.clone(), job);
        s.publish_positions();
        self.wake.notify_all();
        Ok(s.jobs[&id].status.borrow().clone())
    }

    /// Waits for the next queued job and marks it running; `None` once the server stops.
    pub fn next_job(&self) -> Option<String> {
        let mut s = self.lock();
        loop {
            if s.shutdown {
                return None;
            }
            if let Some(id) = s.queue.pop_front() {
                s.publish_positions();
                s.started += 1;
                let n = s.started;
                if let Some(job) = s.jobs.get(&id) {
                    job.status.send_modify(|st| {
                        st.state = State::Running;
                        st.position = None;
                        st.started = Some(n);
                    });
                }
                return Some(id);
            }
            s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Cancels a job: a queued one leaves the queue at once, a running one stops after its
    /// current step. Returns whether the job exists.
    pub fn cancel(&self, id: &str) -> bool {
        let mut s = self.lock();
        let Some(job) = s.jobs.get(id) else {
            return false;
        };
        job.cancel.store(true, Ordering::Relaxed);
        if job.status.borrow().state == State::Queued {
            job.status.send_modify(|st| {
                st.state = State::Cancelled;
                st.position = None;
            });
            s.queue.retain(|q| q != id);
            s.publish_positions();
            s.retire(id);
        }
        true
    }

    /// Stops taking jobs, cancels every queued and running one and wakes the worker.
    pub fn shut_down(&self) {
        let ids: Vec<String> = {
            let mut s = self.lock();
            s.shutdown = true;
            s.jobs.keys().cloned().collect()
        };
        for id in ids {
            self.cancel(&id);
        }
        self.wake.notify_all();
    }
}

impl Inner {
    /// Tells every queued job its place.
    fn publish_positions(&self) {
        for (i, id) in self.queue.iter().enumerate() {
            if let Some(job) = self.jobs.get(id) {
                job.status.send_if_modified(|st| {
                    let changed = st.position != Some(i);
                    st.position = Some(i);
                    changed
                });
            }
        }
    }

    /// Records a job as finished, forgetting the oldest finished ones beyond the limit.
    pub fn retire(&mut self, id: &str) {
        self.finished.push_back(id.to_string());
        while self.finished.len() > MAX_FINISHED_JOBS {
            if let Some(old) = self.finished.pop_front() {
                self.jobs.remove(&old);
            }
        }
    }
}
