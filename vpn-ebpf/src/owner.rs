//! Who created each socket, keyed by socket cookie, so that a packet the
//! uplink guard drops (in softirq context, where "current" means nothing)
//! can name its process.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_get_socket_cookie,
    },
    macros::map,
    maps::LruHashMap,
    programs::SockContext,
    EbpfContext,
};
use vpn_common::SockOwner;

/// Socket cookie -> creator. LRU: closed sockets age out, nothing to clean.
#[map(name = "SOCK_OWNERS")]
pub static SOCK_OWNERS: LruHashMap<u64, SockOwner> = LruHashMap::with_max_entries(65536, 0);

/// Records the creating process of the socket (called from sock_create).
#[inline(always)]
pub fn record(ctx: &SockContext) {
    // SAFETY: ctx is this hook's bpf_sock context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return;
    }
    let owner = SockOwner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid: bpf_get_current_uid_gid() as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = SOCK_OWNERS.insert(&cookie, &owner, 0);
}

/// The creator of the socket with this cookie, if recorded.
#[inline(always)]
pub fn lookup(cookie: u64) -> Option<SockOwner> {
    // SAFETY: the value is copied out at once.
    unsafe { SOCK_OWNERS.get(&cookie) }.copied()
}
