//! Tasks written against task-supervisor 0.3.x, the way its users wrote them: with their own
//! `anyhow` and `async-trait` dependencies, `#[async_trait]` implementations on types that
//! derive `Clone`, and errors built with `bail!`, `anyhow!`, `TaskError::msg`, `.context(..)`
//! and `?`. The tests beside this crate run them against this crate and check that they behave
//! as 0.3.x documented.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use task_supervisor::{SupervisedTask, TaskError, TaskResult};

/// How each run of a [`Job`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `bail!("...")`.
    Bail,
    /// `Err(TaskError::msg("..."))`.
    Msg,
    /// `Err(anyhow!("..."))`.
    AnyhowMacro,
    /// A std error wrapped twice with `.context(..)`, then `?`.
    Context,
    /// `?` on a bare std error.
    QuestionMark,
    /// `panic!("...")`.
    Panic,
    /// `Ok(())` after `work`.
    Complete { work: Duration },
    /// Never returns.
    Pend,
}

/// A task whose every run ends as `ending` says, counting its runs in a counter all clones
/// share.
#[derive(Clone, Debug)]
pub struct Job {
    pub ending: Ending,
    pub runs: Arc<AtomicUsize>,
}

impl Job {
    pub fn new(ending: Ending) -> Self {
        Self {
            ending,
            runs: Arc::default(),
        }
    }

    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

fn parse_port(text: &str) -> Result<u16, std::num::ParseIntError> {
    text.parse()
}

fn load_config(port: &str) -> anyhow::Result<u16> {
    parse_port(port).context("parsing the port")
}

#[async_trait]
impl SupervisedTask for Job {
    async fn run(&mut self) -> TaskResult {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        match self.ending {
            Ending::Bail => bail!("bailed out in run {run}"),
            Ending::Msg => Err(TaskError::msg("built with TaskError::msg")),
            Ending::AnyhowMacro => Err(anyhow!("built with anyhow! in run {run}")),
            Ending::Context => {
                let _port = load_config("eighty").context("loading the config")?;
                Ok(())
            }
            Ending::QuestionMark => {
                let _port = parse_port("-1")?;
                Ok(())
            }
            Ending::Panic => panic!("a plain panic in run {run}"),
            Ending::Complete { work } => {
                tokio::time::sleep(work).await;
                Ok(())
            }
            Ending::Pend => std::future::pending().await,
        }
    }
}
