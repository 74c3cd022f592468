//! The model behind both exporters: events go in, the model's transitions come out, so the
//! exports show exactly the states, switches and resume latencies `report` counts.

use model::{Event, Model, ModelConfig, Transition};

/// A tracked thread as the exporters label it (from its latest `Transition::Thread`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadLabel {
    pub tid: u32,
    pub pid: u32,
    pub vm: String,
    pub comm: String,
    /// `model::thread_label`.
    pub label: String,
}

pub struct Fold {
    model: Model,
    threads: Vec<Option<ThreadLabel>>,
}

impl Fold {
    pub fn new() -> Self {
        // The report's window, so both fold the same file identically.
        let mut model = Model::new(ModelConfig::report());
        model.record_transitions(true);
        Fold {
            model,
            threads: Vec::new(),
        }
    }

    /// Folds `ev` in; appends the transitions the model applied meanwhile to `out`.
    pub fn push(&mut self, ev: &Event, out: &mut Vec<Transition>) {
        self.model.ingest(ev);
        self.take(out);
    }

    /// Ends the stream: appends the transitions still held to `out`; returns the time open
    /// states end at (the snapshot's `ts`).
    pub fn finish(&mut self, out: &mut Vec<Transition>) -> u64 {
        self.model.finish();
        self.take(out);
        self.model.now()
    }

    fn take(&mut self, out: &mut Vec<Transition>) {
        let from = out.len();
        self.model.take_transitions(out);
        for t in &out[from..] {
            if let Transition::Thread {
                thread,
                tid,
                pid,
                vm,
                vcpu,
                comm,
                ..
            } = t
            {
                let i = *thread as usize;
                if self.threads.len() <= i {
                    self.threads.resize(i + 1, None);
                }
                self.threads[i] = Some(ThreadLabel {
                    tid: *tid,
                    pid: *pid,
                    vm: vm.clone(),
                    comm: comm.to_string(),
                    label: model::thread_label(vm, *vcpu, comm),
                });
            }
        }
    }

    /// The label of thread slot `thread` (known once its `Transition::Thread` was taken).
    pub fn thread(&self, thread: u32) -> Option<&ThreadLabel> {
        self.threads.get(thread as usize).and_then(Option::as_ref)
    }
}

impl Default for Fold {
    fn default() -> Self {
        Fold::new()
    }
}
