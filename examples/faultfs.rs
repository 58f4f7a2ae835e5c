//! A one-file FUSE file system that fails like broken storage, for the input-fault
//! tests (tests/e2e/test_input_faults.py): it serves a copy of SOURCE's bytes under
//! MOUNTPOINT/<SOURCE's name>, and
//! - `eio`: every read that reaches byte FROM or beyond fails with EIO;
//! - `hang`: every read of byte FROM is never answered (a file server that went
//!   away: the reader waits until it is killed);
//! - `hang-once`: the first read of byte FROM is never answered, later ones are (a
//!   server that lost one request).
//!
//!     faultfs SOURCE MOUNTPOINT eio|hang|hang-once FROM
//!
//! Prints "mounted" once the file can be opened; unmounts on SIGTERM or SIGINT.
//! Needs root (it mounts without fusermount).

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Eio,
    Hang,
    HangOnce,
}

struct FaultFs {
    name: String,
    source: std::fs::File,
    attr: FileAttr,
    mode: Mode,
    from: u64,
    /// Reads that are never answered (held, so that dropping them does not answer).
    held: Mutex<Vec<ReplyData>>,
}

const FILE: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(3600);

fn attr(ino: INodeNo, kind: FileType, size: u64, perm: u16) -> FileAttr {
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name.to_str() == Some(self.name.as_str()) {
            reply.entry(&TTL, &self.attr, fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            reply.attr(&TTL, &attr(INodeNo::ROOT, FileType::Directory, 0, 0o755));
        } else if ino == FILE {
            reply.attr(&TTL, &self.attr);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    /// In the hang modes the file is opened for direct I/O: each read is a request of
    /// its own, not a page of the one page cache every process of this machine shares
    /// (a read waiting on a held request keeps its pages locked, so every other worker
    /// here would wait too; on a cluster, the other nodes have page caches of their
    /// own). Mapping such a file fails, and drover reads it through the HDF5 library.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let flags = match self.mode {
            Mode::Eio => FopenFlags::empty(),
            Mode::Hang | Mode::HangOnce => FopenFlags::FOPEN_DIRECT_IO,
        };
        reply.opened(FileHandle(0), flags);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            reply.error(Errno::ENOENT);
            return;
        }
        let end = offset + u64::from(size);
        let past = end > self.from && offset < self.attr.size;
        let covers = offset <= self.from && self.from < end;
        match self.mode {
            Mode::Eio if past => return reply.error(Errno::EIO),
            Mode::Hang | Mode::HangOnce if covers => {
                let mut held = self.held.lock().expect("held reads");
                if self.mode == Mode::Hang || held.is_empty() {
                    eprintln!("faultfs: holding a read of {size} bytes at {offset}");
                    held.push(reply);
                    return;
                }
            }
            _ => {}
        }
        let mut buf = vec![0u8; size as usize];
        match self.source.read_at(&mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOENT);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, self.name.as_str()),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: faultfs SOURCE MOUNTPOINT eio|hang|hang-once FROM";
    let [_, source, mountpoint, mode, from] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mode = match mode.as_str() {
        "eio" => Mode::Eio,
        "hang" => Mode::Hang,
        "hang-once" => Mode::HangOnce,
        other => {
            eprintln!("faultfs: mode \"{other}\": use eio, hang or hang-once");
            std::process::exit(2);
        }
    };
    let Ok(from) = from.parse::<u64>() else {
        eprintln!("faultfs: FROM \"{from}\" is not a byte offset");
        std::process::exit(2);
    };
    let source_path = PathBuf::from(source);
    let file = std::fs::File::open(&source_path).unwrap_or_else(|e| {
        eprintln!("faultfs: cannot open \"{source}\": {e}");
        std::process::exit(1);
    });
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let name = source_path.file_name().and_then(OsStr::to_str).unwrap_or("file").to_string();
    // Signals are taken by sigwait below: blocked before any thread starts.
    let stop = nix::sys::signal::SigSet::from_iter([nix::sys::signal::SIGTERM, nix::sys::signal::SIGINT]);
    stop.thread_block().expect("block SIGTERM and SIGINT");
    let fs = FaultFs {
        name,
        source: file,
        attr: attr(FILE, FileType::RegularFile, len, 0o444),
        mode,
        from,
        held: Mutex::new(Vec::new()),
    };
    let mut config = fuser::Config::default();
    config
        .mount_options
        .extend([MountOption::RO, MountOption::FSName("faultfs".into())]);
    let session = fuser::spawn_mount2(fs, mountpoint, &config).unwrap_or_else(|e| {
        eprintln!("faultfs: cannot mount at \"{mountpoint}\": {e}");
        std::process::exit(1);
    });
    println!("mounted");
    let _ = stop.wait();
    drop(session);
}
