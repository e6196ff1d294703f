//! The server's CPU time, read from /proc, so that every store and retrieve run can say what
//! it cost in core-seconds per GB beside its GB/s. The server is found by the loopback port
//! it listens on: the processes holding that listening socket (one for holdalld; nginx's
//! master and its workers).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::load::Run;

/// The processes whose CPU time is read.
#[derive(Debug, Clone)]
pub struct ServerCpu {
    pids: Vec<u32>,
}

impl ServerCpu {
    /// The processes listening on 127.0.0.1:`port`.
    pub fn listening_on(port: u16) -> Result<ServerCpu> {
        let inode = listening_inode(port)?;
        let wanted = format!("socket:[{inode}]");
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let holds = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new(&wanted)));
            if holds {
                pids.push(pid);
            }
        }
        if pids.is_empty() {
            bail!("no process of this user holds the socket listening on port {port}");
        }
        Ok(ServerCpu { pids })
    }

    /// User plus system seconds the processes (all their threads, io_uring workers
    /// included) have used so far.
    pub fn seconds(&self) -> Result<f64> {
        let mut total = 0.0;
        for pid in &self.pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("reading /proc/{pid}/stat"))?;
            total += cpu_seconds(&stat)?.1;
        }
        Ok(total)
    }

    /// CPU seconds so far, split: all threads, and the kernel's io_uring workers among them
    /// (`iou-wrk-*`: the operations io_uring could not complete inline, such as appending
    /// O_DIRECT writes). A worker that has exited is counted in neither (its time moves to
    /// the process's dead-threads total, which /proc does not split).
    pub fn seconds_split(&self) -> Result<CpuSplit> {
        let mut split = CpuSplit::default();
        for pid in &self.pids {
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
                    continue;
                };
                let (name, seconds) = cpu_seconds(&stat)?;
                split.threads += seconds;
                if name.starts_with("iou-wrk") {
                    split.io_workers += seconds;
                }
            }
        }
        Ok(split)
    }
}

/// CPU seconds of a process's threads, and of its io_uring workers among them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuSplit {
    /// Every live thread.
    pub threads: f64,
    /// The io_uring worker threads.
    pub io_workers: f64,
}

/// The command name and user + system seconds of a /proc `stat` line.
fn cpu_seconds(stat: &str) -> Result<(&str, f64)> {
    // The name may hold spaces and parentheses: it runs to the last ')'.
    let (head, after) = stat
        .rsplit_once(')')
        .context("a /proc stat line without a name")?;
    let name = head.split_once('(').map_or("", |(_, n)| n);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("a short /proc stat line")?
            .parse::<u64>()? as f64)
    };
    Ok((name, (ticks(11)? + ticks(12)?) / clock_ticks_per_s()))
}

/// One load run's rate and what it cost the server.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Payload GB/s.
    pub gbps: f64,
    /// Wall time of the run.
    pub seconds: f64,
    /// The server's user + system core-seconds per GB moved.
    pub core_s_per_gb: f64,
    /// The share of that spent in io_uring worker threads.
    pub io_workers_core_s_per_gb: f64,
}

/// Runs `run` and reads `cpu` before and after it.
pub fn measured(cpu: &ServerCpu, run: impl FnOnce() -> Result<Run>) -> Result<Measured> {
    let (before, split) = (cpu.seconds()?, cpu.seconds_split()?);
    let done = run()?;
    let spent = cpu.seconds()? - before;
    let workers = cpu.seconds_split()?.io_workers - split.io_workers;
    Ok(Measured {
        gbps: done.gbps(),
        seconds: done.seconds,
        core_s_per_gb: core_s_per_gb(spent, done.bytes),
        io_workers_core_s_per_gb: core_s_per_gb(workers, done.bytes),
    })
}

/// Core-seconds per GB: `cpu_s` spent to move `bytes`.
pub fn core_s_per_gb(cpu_s: f64, bytes: u64) -> f64 {
    cpu_s / (bytes as f64 / 1e9)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The inode of the IPv4 socket listening on 127.0.0.1:`port`, from /proc/net/tcp.
fn listening_inode(port: u16) -> Result<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let local = format!("0100007F:{port:04X}");
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, ..., st (0A = LISTEN), ..., inode at index 9.
        if f.len() > 9 && f[1] == local && f[3] == "0A" {
            return Ok(f[9].parse()?);
        }
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_its_listening_port_and_reads_its_cpu() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cpu = ServerCpu::listening_on(port).unwrap();
        assert_eq!(cpu.pids, [std::process::id()]);
        let before = cpu.seconds().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = cpu.seconds().unwrap() - before;
        assert!(spent >= 0.1, "{spent} s of CPU for 300 ms of spinning");
        // Each thread's user and system times are rounded down to clock ticks on their own.
        let split = cpu.seconds_split().unwrap();
        let tick = 1.0 / clock_ticks_per_s();
        assert!(
            split.threads + 8.0 * tick >= spent && split.io_workers >= 0.0,
            "{split:?} against {spent} s"
        );
        let line = "42 (iou-wrk-7 (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let (name, seconds) = cpu_seconds(line).unwrap();
        assert_eq!(name, "iou-wrk-7 (x)");
        assert!((seconds - 300.0 / clock_ticks_per_s()).abs() < 1e-9);
        assert!((core_s_per_gb(2.0, 4_000_000_000) - 0.5).abs() < 1e-9);
    }
}
