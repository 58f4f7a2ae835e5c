//! Whether a worker may write output chunks straight into a file the server created:
//! the same file (device and inode) on the same host, or the same inode on a parallel
//! file system that every node mounts (Lustre, GPFS/Spectrum Scale, BeeGFS, WekaFS:
//! each presents one coherent file to all its clients, so blocks written by workers
//! on different nodes into disjoint chunks are all there when the server closes the
//! file). A user can force it on (`shared_fs = true` in a site file, `drover worker
//! --shared-fs`) for a file system drover does not recognise that gives the same
//! guarantee, or off (`shared_fs = false`, `--no-shared-fs`): every block then
//! travels to the server's writer.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The worker's policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedFs {
    /// Same device and inode, or the same inode on a recognised parallel file system.
    #[default]
    Auto,
    /// The same inode is enough (the user vouches for the file system).
    On,
    /// Never: send every block.
    Off,
}

/// Parallel file systems recognised by their `statfs` magic: (magic, name).
const PARALLEL: [(i64, &str); 4] = [
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS/Spectrum Scale"),
    (0x1983_0326, "BeeGFS"),
    (0x1803_1977, "WekaFS"),
];

/// The parallel file system `path` is on, if drover recognises it.
pub fn parallel_fs(path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    let magic = st.filesystem_type().0 as i64;
    PARALLEL.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// How a worker sees the server's file: same device and inode (this host, or one
/// mount shared by several), or the same inode through another mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    SameFile,
    SameInode,
    Other,
}

impl Seen {
    pub fn of(dev: u64, ino: u64, server_dev: u64, server_ino: u64) -> Self {
        match (ino == server_ino, dev == server_dev) {
            (true, true) => Self::SameFile,
            (true, false) => Self::SameInode,
            (false, _) => Self::Other,
        }
    }
}

/// May a worker with `policy` write into a file it sees as `seen`, on the parallel
/// file system `parallel` (if any)?
pub fn may_write(policy: SharedFs, seen: Seen, parallel: Option<&str>) -> bool {
    match (policy, seen) {
        (SharedFs::Off, _) | (_, Seen::Other) => false,
        (_, Seen::SameFile) | (SharedFs::On, Seen::SameInode) => true,
        (SharedFs::Auto, Seen::SameInode) => parallel.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_writes_directly() {
        use SharedFs::*;
        let same = Seen::of(1, 7, 1, 7);
        let other_mount = Seen::of(2, 7, 1, 7);
        let other_file = Seen::of(1, 8, 1, 7);
        assert_eq!((same, other_mount, other_file), (Seen::SameFile, Seen::SameInode, Seen::Other));
        // The same file: unless turned off.
        assert!(may_write(Auto, same, None) && may_write(On, same, None) && !may_write(Off, same, None));
        // Another mount of it: on a parallel file system, or when the user says so.
        assert!(!may_write(Auto, other_mount, None));
        assert!(may_write(Auto, other_mount, Some("Lustre")));
        assert!(may_write(On, other_mount, None));
        assert!(!may_write(Off, other_mount, Some("Lustre")));
        // Another file: never.
        assert!(!may_write(On, other_file, Some("Lustre")));
    }

    #[test]
    fn a_local_file_system_is_not_taken_for_a_parallel_one() {
        assert_eq!(parallel_fs(Path::new("/tmp")), None);
        assert_eq!(parallel_fs(Path::new("/no/such/path")), None);
    }
}
