//! What the server, the CLI and the bench ask of the operating system.

/// Raises this process's soft open-files limit to its hard limit and returns
/// the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: get/setrlimit only read and write the struct we hand them.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}
