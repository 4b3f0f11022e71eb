//! Runs every scenario of the suite for every variant, interleaved, several repetitions each,
//! and prints a table of medians with ratios.
//!
//! ```text
//! cargo run --release -p benchmarks --bin compare -- [--smoke] [--reps N] [--sizes 1000,10000,100000]
//!     [--scenarios start,idle,...] [--variants raw,ours,peer,taskvisor] [--timeout SECS] [--out FILE]
//! ```
//!
//! Each (scenario, variant, size, repetition) runs in a fresh child process: the binary
//! re-executes itself with `--child`, so that memory and CPU figures of one measurement
//! cannot contaminate another. Within a repetition every scenario is run for every variant,
//! in an order that rotates from one repetition to the next. Nothing is asserted about timing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use benchmarks::{Metrics, Params, Scenario, Variant};

const USAGE: &str = "usage: compare [--smoke] [--reps N] [--sizes N,N,...] \
[--scenarios start,idle,beat,restart,hang,panic,status,shutdown,storm,group,reverse] \
[--variants raw,ours,peer,taskvisor] [--timeout SECS] [--out FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    match Options::parse(&args) {
        Ok(options) => parent(&options),
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

// ----- the child: one measurement -----

fn child(args: &[String]) -> ExitCode {
    let [scenario, variant, n, profile] = args else {
        eprintln!("child: expected SCENARIO VARIANT N PROFILE");
        return ExitCode::from(2);
    };
    let (Ok(scenario), Ok(variant), Ok(n)) = (
        scenario.parse::<Scenario>(),
        variant.parse::<Variant>(),
        n.parse::<usize>(),
    ) else {
        eprintln!("child: bad arguments {args:?}");
        return ExitCode::from(2);
    };
    let params = if profile == "smoke" {
        Params::smoke()
    } else {
        Params::full()
    };
    // The panic scenario panics on purpose on every run: keep those quiet, report the rest.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_purpose = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|message| message.contains("on purpose"));
        if !on_purpose {
            default_hook(info);
        }
    }));
    benchmarks::measure::epoch();
    let workers = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    // The scenario runs in a spawned task, on a worker thread, as a service's own code would:
    // driving it from `block_on` would put a cross-thread wake-up in every await.
    let metrics = runtime
        .block_on(async move {
            tokio::spawn(async move { benchmarks::run(scenario, variant, n, &params).await }).await
        })
        .expect("the scenario panicked");
    let mut out = String::new();
    match metrics {
        None => out.push_str("NA\n"),
        Some(metrics) => {
            for (key, value) in metrics {
                let _ = writeln!(out, "M {key} {value}");
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    // Leave at once: tearing down a runtime with a million tasks measures nothing.
    std::process::exit(0)
}

// ----- the parent: the schedule and the table -----

struct Options {
    smoke: bool,
    reps: usize,
    sizes: Vec<usize>,
    /// Whether `--sizes` was given (some scenarios have default sizes of their own).
    sizes_given: bool,
    scenarios: Vec<Scenario>,
    variants: Vec<Variant>,
    timeout: Duration,
    out: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            smoke: false,
            reps: 5,
            sizes: Vec::new(),
            sizes_given: false,
            scenarios: Scenario::ALL.to_vec(),
            variants: Variant::ALL.to_vec(),
            timeout: Duration::from_secs(300),
            out: None,
        };
        let mut reps = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--smoke" => options.smoke = true,
                "--reps" => reps = Some(value()?.parse().map_err(|e| format!("--reps: {e}"))?),
                "--sizes" => {
                    options.sizes = list(&value()?, |s| {
                        s.replace('_', "")
                            .parse::<usize>()
                            .map_err(|e| e.to_string())
                    })?;
                }
                "--scenarios" => options.scenarios = list(&value()?, str::parse)?,
                "--variants" => options.variants = list(&value()?, str::parse)?,
                "--timeout" => {
                    let secs: u64 = value()?.parse().map_err(|e| format!("--timeout: {e}"))?;
                    options.timeout = Duration::from_secs(secs);
                }
                "--out" => options.out = Some(value()?),
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        options.reps = reps.unwrap_or(if options.smoke { 1 } else { 5 }).max(1);
        options.sizes_given = !options.sizes.is_empty();
        if options.sizes.is_empty() {
            options.sizes = if options.smoke {
                vec![100]
            } else {
                vec![1_000, 10_000, 100_000]
            };
        }
        options.sizes.sort_unstable();
        options.sizes.dedup();
        if options.sizes.contains(&0) {
            return Err("sizes must be positive".into());
        }
        Ok(options)
    }

    /// The (scenario, N) pairs to run. Scenarios the issue fixes at 100k tasks run at the
    /// largest size up to 100k; the shutdowns (concurrent and reverse) run at 10k and above
    /// when such sizes are given. The group restart runs at every size given, and by default
    /// at those up to 10k.
    fn jobs(&self) -> Vec<(Scenario, usize)> {
        let big = self
            .sizes
            .iter()
            .copied()
            .filter(|&n| n <= 100_000)
            .max()
            .unwrap_or(self.sizes[0]);
        let mut large: Vec<usize> = self
            .sizes
            .iter()
            .copied()
            .filter(|&n| (10_000..=100_000).contains(&n))
            .collect();
        if large.is_empty() {
            large.push(big);
        }
        let mut group: Vec<usize> = if self.sizes_given {
            self.sizes.clone()
        } else {
            self.sizes
                .iter()
                .copied()
                .filter(|&n| n <= 10_000)
                .collect()
        };
        if group.is_empty() {
            group.push(self.sizes[0]);
        }
        let mut jobs = Vec::new();
        for &scenario in &self.scenarios {
            match scenario {
                Scenario::Start => jobs.extend(self.sizes.iter().map(|&n| (scenario, n))),
                Scenario::Idle | Scenario::Beat | Scenario::Status => jobs.push((scenario, big)),
                Scenario::Shutdown | Scenario::Reverse => {
                    jobs.extend(large.iter().map(|&n| (scenario, n)));
                }
                Scenario::Group => jobs.extend(group.iter().map(|&n| (scenario, n))),
                Scenario::Restart
                | Scenario::Panic
                | Scenario::Hang
                | Scenario::Storm
                | Scenario::Polls => {
                    jobs.push((scenario, 1));
                }
            }
        }
        jobs
    }
}

fn list<T>(value: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    value
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| parse(item.trim()))
        .collect()
}

/// What one child reported.
#[derive(Debug, Clone)]
enum Outcome {
    Measured(Metrics),
    NotExpressible,
    Failed(String),
}

type Key = (Scenario, usize, Variant);

fn parent(options: &Options) -> ExitCode {
    let exe = std::env::current_exe().expect("current_exe");
    let jobs = options.jobs();
    let profile = if options.smoke { "smoke" } else { "full" };
    let started = Instant::now();
    let mut results: HashMap<Key, Vec<Outcome>> = HashMap::new();
    let mut failures = 0;
    let mut samples = String::from("rep\tscenario\tn\tvariant\tmetric\tvalue\n");

    for rep in 0..options.reps {
        for (job_index, &(scenario, n)) in jobs.iter().enumerate() {
            // Rotate the order so that no variant always runs first, or right after another.
            let shift = (rep + job_index) % options.variants.len();
            let mut order = options.variants.clone();
            order.rotate_left(shift);
            for variant in order {
                let t0 = Instant::now();
                let outcome = run_child(&exe, scenario, variant, n, profile, options.timeout);
                eprintln!(
                    "[{:>6.1}s] rep {}/{} {scenario:<8} n={n:<8} {variant:<9} {:>6.2}s {}",
                    started.elapsed().as_secs_f64(),
                    rep + 1,
                    options.reps,
                    t0.elapsed().as_secs_f64(),
                    summary(&outcome),
                );
                match &outcome {
                    Outcome::Measured(metrics) => {
                        for (metric, value) in metrics {
                            let _ = writeln!(
                                samples,
                                "{rep}\t{scenario}\t{n}\t{variant}\t{metric}\t{value}"
                            );
                        }
                    }
                    Outcome::Failed(_) => failures += 1,
                    Outcome::NotExpressible => {}
                }
                results
                    .entry((scenario, n, variant))
                    .or_default()
                    .push(outcome);
            }
        }
    }

    let table = render(options, &jobs, &results);
    println!("{table}");
    println!(
        "{} repetition(s), every measurement in a fresh process; total {:.1}s",
        options.reps,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &options.out {
        if let Err(error) = std::fs::write(path, &samples) {
            eprintln!("could not write {path}: {error}");
        }
    }
    if failures > 0 {
        eprintln!("{failures} measurement(s) failed");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured(metrics) => metrics
            .iter()
            .map(|(key, value)| format!("{key}={}", fmt(*value)))
            .collect::<Vec<_>>()
            .join(" "),
        Outcome::NotExpressible => "n/a".into(),
        Outcome::Failed(why) => format!("FAILED: {why}"),
    }
}

fn run_child(
    exe: &std::path::Path,
    scenario: Scenario,
    variant: Variant,
    n: usize,
    profile: &str,
    timeout: Duration,
) -> Outcome {
    let spawned = Command::new(exe)
        .args(["--child", &scenario.to_string(), &variant.to_string()])
        .arg(n.to_string())
        .arg(profile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(format!("spawn: {error}")),
    };
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => return Outcome::Failed(format!("wait: {error}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        return Outcome::Failed(format!("timed out after {timeout:?}"));
    };
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Outcome::Failed(format!(
            "{status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    if stdout.lines().any(|line| line == "NA") {
        return Outcome::NotExpressible;
    }
    let mut metrics = Metrics::new();
    for line in stdout.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("M") {
            continue;
        }
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        // Metric names are the static strings of the library; find ours again.
        metrics.push((intern(key), value));
    }
    if metrics.is_empty() {
        return Outcome::Failed("no metrics reported".into());
    }
    Outcome::Measured(metrics)
}

/// How a metric reads, and how its ratio is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Lower is better; the ratio is ours / other.
    Cost,
    /// Higher is better; the ratio is still "ours costs x times as much": other / ours.
    Rate,
    /// A count or a diagnostic; no ratio.
    Plain,
}

/// Every metric the scenarios report: its label, its unit and its kind.
const METRICS: &[(&str, &str, &str, Kind)] = &[
    (
        "add_ns_per_task",
        "1 start: add call",
        "ns/task",
        Kind::Cost,
    ),
    (
        "start_ms",
        "1 start: until last run entered",
        "ms",
        Kind::Cost,
    ),
    (
        "bytes_per_task",
        "2 memory: RSS per task",
        "bytes",
        Kind::Cost,
    ),
    ("cpu_pct", "CPU", "% core", Kind::Cost),
    (
        "rusage_cpu_pct",
        "CPU (getrusage cross-check)",
        "% core",
        Kind::Plain,
    ),
    ("call_ns", "4 one heartbeat call", "ns", Kind::Cost),
    (
        "not_healthy",
        "tasks not healthy after window",
        "tasks",
        Kind::Plain,
    ),
    ("runs_per_s", "runs per second", "runs/s", Kind::Rate),
    (
        "gap_p50_us",
        "end of run -> next run, p50",
        "us",
        Kind::Cost,
    ),
    (
        "gap_p99_us",
        "end of run -> next run, p99",
        "us",
        Kind::Cost,
    ),
    (
        "detect_p50_ms",
        "last beat -> next run, p50",
        "ms",
        Kind::Cost,
    ),
    ("late_p50_ms", "after the timeout, p50", "ms", Kind::Plain),
    ("late_max_ms", "after the timeout, max", "ms", Kind::Plain),
    ("hangs", "hangs detected", "count", Kind::Plain),
    (
        "first_hang_ms",
        "last beat -> next run, hang 50 ms into a run, default 3 s start-up grace",
        "ms",
        Kind::Plain,
    ),
    ("one_p50_ns", "7 one status, p50", "ns", Kind::Cost),
    ("one_p99_ns", "7 one status, p99", "ns", Kind::Cost),
    ("all_ms", "7 all statuses", "ms", Kind::Cost),
    (
        "all_shared_ms",
        "7 all statuses, names shared (ours: `task_statuses`)",
        "ms",
        Kind::Cost,
    ),
    (
        "clock_pair_ns",
        "two clock reads (in the above)",
        "ns",
        Kind::Plain,
    ),
    ("ms", "8 shutdown: until wait() returns", "ms", Kind::Cost),
    (
        "max_live",
        "9 storm: most live instances",
        "count",
        Kind::Plain,
    ),
    ("runs", "9 storm: runs started", "count", Kind::Plain),
    (
        "issue_ms",
        "9 storm: issuing the requests",
        "ms",
        Kind::Cost,
    ),
    (
        "settled_ms",
        "9 storm: until the last run started",
        "ms",
        Kind::Cost,
    ),
    (
        "group_ms",
        "10 group restart (one for all, N + 1 tasks): failure -> every next run entered",
        "ms",
        Kind::Cost,
    ),
    (
        "reverse_ms",
        "11 reverse shutdown: until wait() returns",
        "ms",
        Kind::Cost,
    ),
    (
        "poll_ns",
        "12 one poll of a run that yields (ours: blocked-poll detection on)",
        "ns",
        Kind::Cost,
    ),
    (
        "poll_off_ns",
        "12 one poll, ours with blocked-poll detection off",
        "ns",
        Kind::Cost,
    ),
    (
        "all_info_ms",
        "7 all task infos (ours: `task_infos`)",
        "ms",
        Kind::Cost,
    ),
];

fn intern(key: &str) -> &'static str {
    METRICS
        .iter()
        .find(|(name, ..)| *name == key)
        .map(|(name, ..)| *name)
        .unwrap_or_else(|| Box::leak(key.to_owned().into_boxed_str()))
}

fn describe(scenario: Scenario, key: &str) -> (String, &'static str, Kind) {
    let (label, unit, kind) = METRICS
        .iter()
        .find(|(name, ..)| *name == key)
        .map(|(_, label, unit, kind)| (*label, *unit, *kind))
        .unwrap_or((key, "", Kind::Plain));
    let label = match (scenario, key) {
        (Scenario::Idle, "cpu_pct") => "3 idle CPU".to_owned(),
        (Scenario::Idle, "rusage_cpu_pct") => "3 idle CPU (getrusage)".to_owned(),
        (Scenario::Beat, "cpu_pct") => "4 CPU, tasks beating".to_owned(),
        (Scenario::Beat, "rusage_cpu_pct") => "4 CPU, tasks beating (getrusage)".to_owned(),
        (Scenario::Beat, "not_healthy") => "4 tasks not healthy after the window".to_owned(),
        (Scenario::Restart, _) => format!("5 restart: {label}"),
        (Scenario::Panic, _) => format!("6 panic: {label}"),
        (Scenario::Hang, _) => format!("6 hang: {label}"),
        _ => label.to_owned(),
    };
    (label, unit, kind)
}

/// Medians by metric, or why there are none.
type Medians = Result<HashMap<&'static str, f64>, &'static str>;

fn medians(outcomes: Option<&Vec<Outcome>>) -> Medians {
    let Some(outcomes) = outcomes else {
        return Err("not run");
    };
    if outcomes
        .iter()
        .any(|outcome| matches!(outcome, Outcome::NotExpressible))
    {
        return Err("n/a");
    }
    let mut by_key: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for outcome in outcomes {
        if let Outcome::Measured(metrics) = outcome {
            for &(key, value) in metrics {
                by_key.entry(key).or_default().push(value);
            }
        }
    }
    if by_key.is_empty() {
        return Err("failed");
    }
    Ok(by_key
        .into_iter()
        .map(|(key, mut values)| (key, benchmarks::measure::median(&mut values)))
        .collect())
}

fn render(
    options: &Options,
    jobs: &[(Scenario, usize)],
    results: &HashMap<Key, Vec<Outcome>>,
) -> String {
    let mut table = String::new();
    let mut header = String::from("| scenario | N | unit |");
    let mut rule = String::from("| --- | --: | --- |");
    for variant in &options.variants {
        let _ = write!(header, " {variant} |");
        rule.push_str(" --: |");
    }
    // Ratio columns: each of this crate's variants against every other variant.
    let mine: Vec<Variant> = options
        .variants
        .iter()
        .copied()
        .filter(|variant| matches!(variant, Variant::Ours | Variant::Inline))
        .collect();
    let others: Vec<Variant> = options
        .variants
        .iter()
        .copied()
        .filter(|variant| !mine.contains(variant))
        .collect();
    let pairs: Vec<(Variant, Variant)> = mine
        .iter()
        .flat_map(|&ours| others.iter().map(move |&other| (ours, other)))
        .collect();
    for (ours, other) in &pairs {
        let _ = write!(header, " {ours}/{other} |");
        rule.push_str(" --: |");
    }
    let _ = writeln!(table, "{header}\n{rule}");

    for &(scenario, n) in jobs {
        let per_variant: Vec<(Variant, Medians)> = options
            .variants
            .iter()
            .map(|&variant| (variant, medians(results.get(&(scenario, n, variant)))))
            .collect();
        // Metric order: as the first variant that measured something reported them.
        let mut keys: Vec<&'static str> = Vec::new();
        for variant in Variant::ALL {
            if let Some(Outcome::Measured(metrics)) = results
                .get(&(scenario, n, variant))
                .and_then(|outcomes| outcomes.iter().find(|o| matches!(o, Outcome::Measured(_))))
            {
                for &(key, _) in metrics {
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        let size = if matches!(
            scenario,
            Scenario::Restart | Scenario::Panic | Scenario::Hang | Scenario::Storm
        ) {
            "1".to_owned()
        } else {
            n.to_string()
        };
        for key in keys {
            let (label, unit, kind) = describe(scenario, key);
            let value = |variant: Variant| -> Result<f64, &'static str> {
                let (_, medians) = per_variant
                    .iter()
                    .find(|(v, _)| *v == variant)
                    .ok_or("not run")?;
                match medians {
                    Ok(map) => map.get(key).copied().ok_or("-"),
                    Err(why) => Err(why),
                }
            };
            let _ = write!(table, "| {label} | {size} | {unit} |");
            for &variant in &options.variants {
                let cell = match value(variant) {
                    Ok(v) => fmt(v),
                    Err(why) => why.to_owned(),
                };
                let _ = write!(table, " {cell} |");
            }
            {
                for &(ours, other) in &pairs {
                    let ratio = match (kind, value(ours), value(other)) {
                        (Kind::Plain, ..) => "".to_owned(),
                        (_, Ok(ours), Ok(theirs)) if ours > 0.0 && theirs > 0.0 => {
                            let r = if kind == Kind::Rate {
                                theirs / ours
                            } else {
                                ours / theirs
                            };
                            format!("{r:.2}x")
                        }
                        (_, Ok(_), Ok(_)) => "".to_owned(),
                        (_, Err("n/a"), _) | (_, _, Err("n/a")) => "n/a".to_owned(),
                        _ => "".to_owned(),
                    };
                    let _ = write!(table, " {ratio} |");
                }
            }
            table.push('\n');
            // CPU rows: the difference with the bare baseline is what the issue's target is on.
            if key == "cpu_pct" {
                if let Ok(raw) = value(Variant::Raw) {
                    let _ = write!(table, "| {label}, minus raw | {size} | {unit} |");
                    for &variant in &options.variants {
                        let cell = match value(variant) {
                            Ok(v) => format!("{:+.4}", v - raw),
                            Err(why) => why.to_owned(),
                        };
                        let _ = write!(table, " {cell} |");
                    }
                    for _ in &pairs {
                        table.push_str("  |");
                    }
                    table.push('\n');
                }
            }
        }
    }
    table
}

/// Three significant figures, without scientific notation for ordinary magnitudes.
fn fmt(value: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 10.0 {
        format!("{value:.2}")
    } else if magnitude >= 1.0 {
        format!("{value:.3}")
    } else if magnitude == 0.0 {
        "0".to_owned()
    } else {
        format!("{value:.4}")
    }
}
