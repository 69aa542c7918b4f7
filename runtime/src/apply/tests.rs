//! The scheduler against literal plans: order, parallelism, failure and cancel.

use std::sync::atomic::AtomicUsize;

use vmctl_planner::{Action, Change, Phase, Resource, ResourceId, ResourceKind};
use vmctl_schema::{Pool, PoolKind, Volume};

use super::*;

fn pool(name: &str) -> Change {
    Change {
        host: "local".into(),
        from: None,
        id: ResourceId::new(ResourceKind::Pool, name),
        action: Action::Create,
        reason: None,
        before: None,
        after: Some(Resource::Pool(Pool {
            name: name.into(),
            host: "local".into(),
            kind: PoolKind::Dir,
            path: format!("/p/{name}").into(),
        })),
        status: None,
        attributes: Vec::new(),
    }
}

fn volume(name: &str, pool: &str) -> Change {
    Change {
        host: "local".into(),
        from: None,
        id: ResourceId::new(ResourceKind::Volume, name),
        action: Action::Create,
        reason: None,
        before: None,
        after: Some(Resource::Volume(Volume {
            name: name.into(),
            pool: pool.into(),
            size: 1 << 20,
            from: None,
            prevent_destroy: false,
        })),
        status: None,
        attributes: Vec::new(),
    }
}

/// Two pools with two volumes each.
fn plan() -> Plan {
    Plan {
        project: "lab".into(),
        changes: vec![
            pool("a"),
            pool("b"),
            volume("a1", "a"),
            volume("a2", "a"),
            volume("b1", "b"),
            volume("b2", "b"),
        ],
    }
}

fn limits(per_host: usize, hosts: usize) -> Parallelism {
    Parallelism { per_host, hosts }
}

/// Eight independent pools, two on each of four hosts.
fn fleet_plan() -> Plan {
    let changes = (0..8)
        .map(|i| {
            let mut change = pool(&format!("p{i}"));
            change.host = format!("h{}", i % 4);
            change
        })
        .collect();
    Plan {
        project: "lab".into(),
        changes,
    }
}

/// Runs `plan` with `limits`, each step 30 ms; the most steps that ran at once in
/// total and on one host, and the most hosts busy at once.
fn peaks(plan: &Plan, limits: Parallelism) -> (usize, usize, usize) {
    let graph = ApplyGraph::build(plan).unwrap();
    let running: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let seen = Mutex::new((0, 0, 0));
    let run = |step: &Step| {
        {
            let mut running = running.lock().unwrap();
            *running.entry(step.host.clone()).or_default() += 1;
            let total: usize = running.values().sum();
            let one = running.values().copied().max().unwrap_or(0);
            let hosts = running.values().filter(|&&r| r > 0).count();
            let mut seen = seen.lock().unwrap();
            *seen = (seen.0.max(total), seen.1.max(one), seen.2.max(hosts));
        }
        std::thread::sleep(Duration::from_millis(30));
        *running.lock().unwrap().get_mut(&step.host).unwrap() -= 1;
        Ok(None)
    };
    let report = schedule(&graph, limits, &run, &NoHook, &AtomicBool::new(false));
    assert!(report.succeeded());
    assert_eq!(report.done.len(), plan.changes.len());
    seen.into_inner().unwrap()
}

#[test]
fn parallelism_is_per_host_and_hosts_are_bounded() {
    let plan = fleet_plan();
    // One step per host, every host at once.
    let (total, one, hosts) = peaks(&plan, limits(1, 16));
    assert_eq!(one, 1);
    assert!(hosts >= 2 && total == hosts, "{total} {one} {hosts}");
    // Two hosts at once, two steps on each.
    let (total, one, hosts) = peaks(&plan, limits(2, 2));
    assert!(
        one <= 2 && hosts <= 2 && total <= 4,
        "{total} {one} {hosts}"
    );
    assert!(total >= 2, "{total}");
}

struct Recorder(Mutex<Vec<String>>);

impl Hook for Recorder {
    fn pre_apply(&self, step: &Step) {
        self.0.lock().unwrap().push(format!("start {}", step.id));
    }
    fn post_apply(&self, step: &Step, result: &Result<(), StepError>) {
        let verdict = if result.is_ok() { "ok" } else { "failed" };
        self.0
            .lock()
            .unwrap()
            .push(format!("{verdict} {}", step.id));
    }
}

fn names(steps: &[Step]) -> Vec<String> {
    let mut names: Vec<_> = steps.iter().map(|s| s.id.to_string()).collect();
    names.sort();
    names
}

#[test]
fn dependencies_finish_first_and_independent_steps_overlap() {
    let plan = plan();
    let graph = ApplyGraph::build(&plan).unwrap();
    let hook = Recorder(Mutex::new(Vec::new()));
    let running = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let run = |_: &Step| {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        running.fetch_sub(1, Ordering::SeqCst);
        Ok(None)
    };
    let report = schedule(&graph, limits(3, 16), &run, &hook, &AtomicBool::new(false));
    assert!(report.succeeded());
    assert_eq!(report.done.len(), 6);
    let peak = peak.load(Ordering::SeqCst);
    assert!((2..=3).contains(&peak), "peak {peak}");
    let events = hook.0.into_inner().unwrap();
    let at = |e: &str| events.iter().position(|x| x == e).unwrap();
    assert!(at("ok pool.a") < at("start volume.a1"));
    assert!(at("ok pool.b") < at("start volume.b2"));
}

#[test]
fn a_failure_skips_its_dependents_and_the_rest_finish() {
    let plan = plan();
    let graph = ApplyGraph::build(&plan).unwrap();
    let run = |step: &Step| {
        if step.id.name == "a" {
            Err(StepError::Empty {
                step: "boom".into(),
            })
        } else if step.id.name == "b" {
            Ok(Some(StepNote::NetnsRemoved { name: "b".into() }))
        } else {
            Ok(None)
        }
    };
    let report = schedule(
        &graph,
        limits(2, 16),
        &run,
        &NoHook,
        &AtomicBool::new(false),
    );
    assert_eq!(names(&report.done), ["pool.b", "volume.b1", "volume.b2"]);
    // What a step had to say is kept with it.
    let noted: Vec<_> = report.notes.iter().map(|(s, _)| s.id.to_string()).collect();
    assert_eq!(noted, ["pool.b"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(names(&report.skipped), ["volume.a1", "volume.a2"]);
    assert!(!report.cancelled);
}

#[test]
fn cancel_starts_nothing_new_and_lets_running_steps_end() {
    let plan = plan();
    let graph = ApplyGraph::build(&plan).unwrap();
    let cancel = AtomicBool::new(false);
    let run = |step: &Step| {
        if step.id.name == "a" {
            cancel.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    };
    let report = schedule(&graph, limits(1, 16), &run, &NoHook, &cancel);
    assert!(report.cancelled);
    assert_eq!(names(&report.done), ["pool.a"]);
    assert_eq!(report.skipped.len(), 5);
}

/// `run_step` matches every (resource, phase): a phase the planner never gives a
/// resource (start a pool) is an error, not a step that silently does nothing.
#[test]
fn a_phase_a_resource_does_not_have_is_an_error() {
    let config = vmctl_schema::load_str("c.kdl", "project \"lab\"\nhost \"local\"\n")
        .expect("config")
        .config;
    let vmctl = std::path::Path::new("/nonexistent/vmctl");
    let ctx = HostContext {
        state_dir: &config.hosts[0].state_dir,
        netns: None,
        project: "lab",
        vmctl,
        stop_timeout: std::time::Duration::ZERO,
        cancel: &std::sync::atomic::AtomicBool::new(false),
    };
    let plan = plan();
    let inventory = Inventory::of(&plan);
    for (change, phase) in [(0, Phase::Start), (2, Phase::Stop)] {
        let step = Step {
            change,
            host: "local".into(),
            id: plan.changes[change].id.clone(),
            action: Action::Start,
            phase,
        };
        let result = steps::run_step(&ctx, &inventory, &plan, &step);
        assert!(
            matches!(&result, Err(StepError::NotAVm { .. })),
            "{step}: {result:?}"
        );
    }
}
