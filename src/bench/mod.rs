//! Measurement: perplexity and KL divergence (shared with qbench), and the timing loops of
//! `qrun bench`.

pub mod bandwidth;
pub mod perplexity;
pub mod qbench;
pub mod speed;

/// Peak resident memory of this process in MiB (`VmHWM` of /proc/self/status), so that a
/// benchmark driving one process per configuration reads each one's own peak. `None` where
/// /proc is absent (not Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&s)
}

/// `VmHWM:   123456 kB` -> MiB.
pub fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_hwm_parses() {
        let s = "Name:\tqrun\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(super::parse_vm_hwm(s), Some(2.0));
        assert_eq!(super::parse_vm_hwm("VmRSS: 1 kB"), None);
        // This process has a peak of its own on Linux.
        if cfg!(target_os = "linux") {
            assert!(super::peak_rss_mib().unwrap() > 0.0);
        }
    }
}
