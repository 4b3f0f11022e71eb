//! How a supervisor's end maps to a process exit code, so that the level above (systemd,
//! Kubernetes) restarts a process whose supervisor gave up, and not one that was asked to stop.

use std::process::ExitCode;

use crate::error::SupervisorError;

impl SupervisorError {
    /// The process exit code for a supervisor that stopped with this error; see
    /// [`exit_code`](crate::exit_code) for the table.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::TooManyDeadTasks { .. } => 10,
            Self::RestartIntensityExceeded { .. } => 11,
            Self::SignificantTaskDied { .. } => 12,
            // EX_SOFTWARE of sysexits.h: an internal software error.
            Self::LoopEnded => 70,
        }
    }
}

/// The exit code for a process whose supervisor ended with `outcome` (what
/// [`SupervisorHandle::wait`](crate::SupervisorHandle::wait) returned), for `main` to return.
///
/// | how the supervisor ended | code |
/// | --- | --- |
/// | asked to stop ([`shutdown`](crate::SupervisorHandle::shutdown), a signal, the last handle dropped), or its significant tasks completed | 0 |
/// | [`TooManyDeadTasks`](SupervisorError::TooManyDeadTasks) | 10 |
/// | [`RestartIntensityExceeded`](SupervisorError::RestartIntensityExceeded) | 11 |
/// | [`SignificantTaskDied`](SupervisorError::SignificantTaskDied) | 12 |
/// | [`LoopEnded`](SupervisorError::LoopEnded) (its runtime went away, or a bug) | 70 |
///
/// Every way of giving up is non-zero, so systemd's `Restart=on-failure` restarts the process
/// and a stop that was asked for (0) is left stopped. Kubernetes restarts a container of a
/// Deployment whatever its code (`restartPolicy: Always`); the code still tells a Job
/// (`OnFailure`) whether to retry, and the pod's status says why the container ended. The codes stay below 64 for the supervisor's own rules, clear of the
/// shell's 126 – 165 (signals) and of sysexits' 64 – 78 but for the one that is a bug.
///
/// # Examples
///
/// ```no_run
/// use std::process::ExitCode;
/// use task_supervisor::{exit_code, task_fn, SupervisorBuilder};
///
/// #[tokio::main]
/// async fn main() -> ExitCode {
///     let handle = SupervisorBuilder::new()
///         .with_task("worker", task_fn(std::future::pending))
///         .build()
///         .run();
///     let outcome = handle.wait().await;
///     if let Err(error) = &outcome {
///         eprintln!("the supervisor gave up: {error}");
///     }
///     exit_code(&outcome)
/// }
/// ```
pub fn exit_code(outcome: &Result<(), SupervisorError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(error.exit_code()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_way_of_giving_up_has_its_own_non_zero_code() {
        let errors = [
            SupervisorError::TooManyDeadTasks {
                current_percentage: 0.6,
                threshold: 0.5,
            },
            SupervisorError::RestartIntensityExceeded {
                restarts: 4,
                within: Duration::from_secs(5),
            },
            SupervisorError::SignificantTaskDied {
                task: "import".into(),
                reason: "boom".into(),
            },
            SupervisorError::LoopEnded,
        ];
        let codes: Vec<u8> = errors.iter().map(SupervisorError::exit_code).collect();
        assert_eq!(codes, [10, 11, 12, 70]);
        for error in &errors {
            assert_eq!(
                exit_code(&Err(error.clone())),
                ExitCode::from(error.exit_code())
            );
        }
        assert_eq!(exit_code(&Ok(())), ExitCode::SUCCESS);
    }
}
