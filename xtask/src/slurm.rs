//! `cargo xtask slurm-test`: a real Slurm runs a sharded `ddim-edit batch`. It starts munged,
//! slurmctld and slurmd for one node on loopback (free ports, every file in a temporary folder,
//! nothing of the system's Slurm touched), submits a job array whose tasks each run
//! `ddim-edit batch --model toy` with no `--shard` (the shard comes from Slurm's
//! `SLURM_ARRAY_TASK_*`), waits for it, and checks that every job of the file finished exactly
//! once across the tasks' results files and that the PNGs equal an unsharded run's, byte for byte.
//! Needs Debian's `slurm-wlm` and `munge` (`apt-get install slurm-wlm munge`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::project_root;

/// `cargo xtask slurm-test` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ddim-edit binary (default: `cargo build --bin ddim-edit`, then target/debug/ddim-edit).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Tasks of the array job.
    #[arg(long, default_value_t = 2)]
    pub tasks: usize,
    /// Jobs in the job file.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Leave the temporary folder (configuration, logs, outputs) in place.
    #[arg(long)]
    pub keep: bool,
}

/// The daemons of a one-node cluster, stopped on drop.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for daemon in ["slurmd", "slurmctld", "munged"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// A free TCP port on loopback.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `cmd`, failing with its output when it fails.
fn check(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster> {
        let user = check(Command::new("id").arg("-un"))?.trim().to_string();
        let [ctld_port, d_port] = [free_port()?, free_port()?];
        let d = dir.display();
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let key: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(dir.join("munge.key"), key)?;
        check(Command::new("chmod").arg("600").arg(dir.join("munge.key")))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "ClusterName=ddimedit\nSlurmctldHost=localhost(127.0.0.1)\nSlurmUser={user}\nSlurmdUser={user}\n\
             AuthType=auth/munge\nAuthInfo=socket={d}/munge.sock\nCredType=cred/munge\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\n\
             SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n\
             SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             ReturnToService=2\nJobCompType=jobcomp/none\nAccountingStorageType=accounting_storage/none\n\
             NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN\n\
             PartitionName=batch Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n"
        );
        let conf_path = dir.join("slurm.conf");
        std::fs::write(&conf_path, conf)?;
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: conf_path.clone(),
        };
        check(
            Command::new("munged")
                .arg("--force")
                .arg(format!("--key-file={d}/munge.key"))
                .arg(format!("--socket={d}/munge.sock"))
                .arg(format!("--pid-file={d}/munged.pid"))
                .arg(format!("--log-file={d}/munged.log"))
                .arg(format!("--seed-file={d}/munge.seed")),
        )?;
        check(Command::new("slurmctld").arg("-f").arg(&conf_path))?;
        check(
            Command::new("slurmd")
                .arg("-f")
                .arg(&conf_path)
                .args(["-N", "localhost"]),
        )?;
        let started = Instant::now();
        loop {
            let state = cluster.slurm("sinfo").args(["-h", "-o", "%T"]).output()?;
            if String::from_utf8_lossy(&state.stdout).trim() == "idle" {
                return Ok(cluster);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the node did not come up within 60 s; see the logs in {d}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A Slurm client command talking to this cluster.
    fn slurm(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }
}

/// The job file: the toy photo with `n` source prompts (so the jobs spread over the shards).
fn write_jobs(dir: &Path, n: usize) -> Result<PathBuf> {
    let image = project_root().join("tests/fixtures/images/toy.png");
    let lines: Vec<String> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("job{i}"),
                "image": image,
                "prompt": format!("an orange triangle on a textured background, take {i}"),
                "edit_prompt": "a blue triangle on a textured background",
            })
            .to_string()
        })
        .collect();
    let path = dir.join("jobs.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n")?;
    Ok(path)
}

/// The `ddim-edit batch` command line the array's tasks and the reference run share.
fn batch_command(bin: &Path, jobs: &Path, out: &Path) -> String {
    format!(
        "{} batch {} --out-dir {} --model toy --steps 10 -q",
        bin.display(),
        jobs.display(),
        out.display()
    )
}

/// The PNGs of a folder, by name.
fn pngs(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut all = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "png") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            all.insert(name, std::fs::read(&p)?);
        }
    }
    Ok(all)
}

pub fn run(a: &Args) -> Result<()> {
    ensure!(
        a.tasks >= 1 && a.jobs >= 1,
        "--tasks and --jobs must be at least 1"
    );
    for tool in ["munged", "slurmctld", "slurmd", "sbatch", "sinfo"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()?
                .status
                .success(),
            "{tool} not found: install Slurm and munge (Debian: apt-get install slurm-wlm munge)"
        );
    }
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => {
            check(
                Command::new(env!("CARGO"))
                    .args(["build", "--bin", "ddim-edit"])
                    .current_dir(project_root()),
            )?;
            project_root().join("target/debug/ddim-edit")
        }
    };
    let bin = std::fs::canonicalize(&bin).with_context(|| format!("--bin {bin:?}"))?;
    let dir = std::env::temp_dir().join(format!("ddim-edit-slurm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let result = run_in(a, &bin, &dir);
    if a.keep || result.is_err() {
        eprintln!("slurm-test: files left in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let summary = result?;
    println!(
        "slurm-test: {summary} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_in(a: &Args, bin: &Path, dir: &Path) -> Result<String> {
    let jobs = write_jobs(dir, a.jobs)?;
    let (out, reference) = (dir.join("out"), dir.join("reference"));
    let cluster = Cluster::start(dir)?;
    let version = check(cluster.slurm("sinfo").arg("--version"))?
        .trim()
        .to_string();
    let script = dir.join("array.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n#SBATCH --array=0-{}\n#SBATCH --output={}/task-%a.log\n# No --shard: batch reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT.\nexec {}\n",
            a.tasks - 1,
            dir.display(),
            batch_command(bin, &jobs, &out)
        ),
    )?;
    let submitted = cluster
        .slurm("sbatch")
        .args(["--wait", "--parsable"])
        .arg(&script)
        .output()?;
    let logs = (0..a.tasks)
        .map(|i| std::fs::read_to_string(dir.join(format!("task-{i}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        submitted.status.success(),
        "the array job failed: {}\n{logs}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let job_id = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    drop(cluster);

    // Every job exactly once, across the tasks' results files.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_task = Vec::new();
    for i in 0..a.tasks {
        let name = if a.tasks == 1 {
            "results.jsonl".to_string()
        } else {
            format!("results-{i}-of-{}.jsonl", a.tasks)
        };
        let text = std::fs::read_to_string(out.join(&name)).unwrap_or_default();
        per_task.push(text.lines().count());
        for line in text.lines() {
            let r: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{name}: {line}"))?;
            ensure!(r["status"] == "ok", "{name}: a job failed: {line}");
            *seen
                .entry(r["id"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    let expected: Vec<String> = (0..a.jobs).map(|i| format!("job{i}")).collect();
    ensure!(
        seen.keys().cloned().collect::<Vec<_>>() == expected && seen.values().all(|&n| n == 1),
        "jobs not finished exactly once: {seen:?}\n{logs}"
    );
    check(Command::new("sh").args(["-c", &batch_command(bin, &jobs, &reference)]))?;
    ensure!(
        pngs(&out)? == pngs(&reference)?,
        "the array's PNGs differ from an unsharded run's"
    );
    Ok(format!(
        "{version}, array job {job_id} of {} tasks: {} jobs finished exactly once (per task: {per_task:?}), PNGs identical to an unsharded run",
        a.tasks, a.jobs
    ))
}
