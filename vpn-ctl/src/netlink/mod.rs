//! Links, addresses, routes and policy rules through rtnetlink
//! (`netlink/`), and the network namespaces they live in ([`netns`]).
//!
//! Small async functions, one kernel operation each, over rtnetlink's builder
//! chain. Every error names the operation that failed ("add route
//! 100.64.0.0/10 dev 7 table 51820") and carries the kernel's reason.
//!
//! [`Netlink`] owns the rtnetlink connection; its task runs on the tokio
//! runtime that was current when [`Netlink::new`] was called, and is stopped
//! when the handle is dropped.
//!
//! [`ifindex`] and [`ifname`] are the one synchronous name/index lookup
//! (`if_nametoindex` / `if_indextoname`) in the calling thread's namespace,
//! for code that has no runtime at hand.

pub mod netns;

use std::{
    ffi::{CStr, CString},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, BorrowedFd},
};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        route::{RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType},
        rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage},
        AddressFamily,
    },
    Handle, IpVersion, LinkUnspec, RouteMessageBuilder,
};

/// What went wrong, and in which operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink route socket")]
    Connect(#[source] std::io::Error),
    /// The kernel (or rtnetlink) refused an operation.
    #[error("netlink: {op} failed: {}", describe(.source))]
    Op {
        /// The operation, as an `ip`-like command line.
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A link looked up by name does not exist.
    #[error("netlink: no link named {0:?}")]
    LinkNotFound(String),
    /// An argument was rejected before talking to the kernel.
    #[error("netlink: {op}: invalid argument: {reason}")]
    Invalid {
        /// The operation.
        op: String,
        /// Why it was rejected.
        reason: String,
    },
}

fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().to_string(),
        other => other.to_string(),
    }
}

impl NetlinkError {
    /// The kernel's errno, if the kernel refused the request.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Op {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => Some(msg.raw_code().abs()).filter(|c| *c != 0),
            _ => None,
        }
    }

    /// The object to add exists already (`EEXIST`).
    #[must_use]
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object to change or delete does not exist (`ENOENT`, `ESRCH`,
    /// `ENODEV`, `EADDRNOTAVAIL`), or a link name was not found.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::LinkNotFound(_))
            || matches!(
                self.errno(),
                Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL)
            )
    }
}

/// Result of the functions in this module.
pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

fn op_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Op { op, source }
}

/// An address family for dumps and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    #[must_use]
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    fn ip_version(self) -> IpVersion {
        match self {
            Self::V4 => IpVersion::V4,
            Self::V6 => IpVersion::V6,
        }
    }

    fn address_family(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }

    fn max_prefix(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    fn unspecified(self) -> IpAddr {
        match self {
            Self::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Self::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "-4",
            Self::V6 => "-6",
        }
    }
}

/// What a route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Send out of this link (`dev <ifindex>`), no gateway.
    Dev(u32),
    /// Drop silently (`blackhole`).
    Blackhole,
    /// Drop with ICMP unreachable (`unreachable`).
    Unreachable,
}

/// A route: `[blackhole|unreachable] <dst>/<len> [dev <ifindex>] table <t> [metric <m>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network address.
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Where matching packets go.
    pub target: RouteTarget,
    /// Routing table id (254 is main; 0 means main too).
    pub table: u32,
    /// Route priority (`metric`), if any.
    pub metric: Option<u32>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            RouteTarget::Dev(i) => write!(f, "{}/{} dev {i}", self.dst, self.prefix_len)?,
            RouteTarget::Blackhole => write!(f, "blackhole {}/{}", self.dst, self.prefix_len)?,
            RouteTarget::Unreachable => {
                write!(f, "unreachable {}/{}", self.dst, self.prefix_len)?;
            }
        }
        write!(f, " table {}", self.table)?;
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

/// A policy rule: `[not] [fwmark M/MASK] lookup T [suppress_prefixlength N] priority P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// IPv4 or IPv6 rule list.
    pub family: Family,
    /// Rule priority (`pref`).
    pub priority: u32,
    /// Table to look up.
    pub table: u32,
    /// Match `fwmark mark/mask`.
    pub fwmark: Option<(u32, u32)>,
    /// `suppress_prefixlength N`: ignore lookups whose result has a prefix of N or less.
    pub suppress_prefixlen: Option<u32>,
    /// `not`: the selector is inverted.
    pub invert: bool,
}

impl Rule {
    /// `priority P lookup T` in `family`, no selector.
    #[must_use]
    pub fn lookup(family: Family, priority: u32, table: u32) -> Self {
        Self {
            family,
            priority,
            table,
            fwmark: None,
            suppress_prefixlen: None,
            invert: false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} priority {}", self.family.as_str(), self.priority)?;
        if self.invert {
            f.write_str(" not")?;
        }
        if let Some((mark, mask)) = self.fwmark {
            write!(f, " fwmark {mark:#x}/{mask:#x}")?;
        }
        write!(f, " lookup {}", self.table)?;
        if let Some(n) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {n}")?;
        }
        Ok(())
    }
}

/// Owner of an rtnetlink connection.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check_prefix(op: &str, addr: IpAddr, len: u8) -> Result<()> {
    let max = Family::of(addr).max_prefix();
    if len > max {
        return Err(NetlinkError::Invalid {
            op: op.to_owned(),
            reason: format!("prefix length {len} exceeds {max}"),
        });
    }
    Ok(())
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or_else(|| u32::from(msg.header.table))
}

impl Netlink {
    /// Opens a netlink route socket and spawns its connection task on the
    /// current tokio runtime.
    ///
    /// # Errors
    /// [`NetlinkError::Connect`] if the socket cannot be opened.
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        let task = tokio::spawn(conn);
        Ok(Self { handle, task })
    }

    /// Like [`Netlink::new`], with the socket opened inside `ns`: every
    /// request then acts on that namespace's links, addresses and routes.
    ///
    /// # Errors
    /// [`NetlinkError::Connect`] if the namespace cannot be entered or the
    /// socket cannot be opened.
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub fn new_in(ns: &netns::Netns) -> Result<Self> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = ns
            .run(move || {
                // The socket registers with the runtime's reactor here.
                let _guard = rt.enter();
                rtnetlink::new_connection()
            })
            .map_err(|e| NetlinkError::Connect(std::io::Error::other(e.to_string())))?
            .map_err(NetlinkError::Connect)?;
        let task = tokio::spawn(conn);
        Ok(Self { handle, task })
    }

    /// The underlying rtnetlink handle, for operations this module lacks.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Index of the link named `name` (`ip link show <name>`).
    ///
    /// # Errors
    /// [`NetlinkError::LinkNotFound`] if there is no such link.
    pub async fn link_index(&self, name: &str) -> Result<u32> {
        let res = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match res {
            Ok(Some(msg)) => Ok(msg.header.index),
            Ok(None) => Err(NetlinkError::LinkNotFound(name.to_owned())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
                Err(NetlinkError::LinkNotFound(name.to_owned()))
            }
            Err(e) => Err(op_err(format!("get link {name}"))(e)),
        }
    }

    /// `ip link set dev <index> up`.
    ///
    /// # Errors
    /// If the kernel refuses.
    pub async fn set_link_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op_err(format!("set link {index} up")))
    }

    /// `ip link set dev <index> down`.
    ///
    /// # Errors
    /// If the kernel refuses.
    pub async fn set_link_down(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op_err(format!("set link {index} down")))
    }

    /// `ip link set dev <index> mtu <mtu>`.
    ///
    /// # Errors
    /// If the kernel refuses (for example an MTU out of the link's range).
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op_err(format!("set link {index} mtu {mtu}")))
    }

    /// `ip link set dev <index> txqueuelen <len>`.
    ///
    /// # Errors
    /// If the kernel refuses.
    pub async fn set_tx_queue_len(&self, index: u32, len: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).txqueuelen(len).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op_err(format!("set link {index} txqueuelen {len}")))
    }

    /// `ip addr add <addr>/<prefix_len> dev <index>`.
    ///
    /// # Errors
    /// If the prefix length is invalid or the kernel refuses (`EEXIST`).
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let op = format!("add address {addr}/{prefix_len} dev {index}");
        check_prefix(&op, addr, prefix_len)?;
        self.handle
            .address()
            .add(index, addr, prefix_len)
            .execute()
            .await
            .map_err(op_err(op))
    }

    /// `ip addr del <addr>/<prefix_len> dev <index>`.
    ///
    /// # Errors
    /// If the kernel refuses (`EADDRNOTAVAIL` if the address is absent).
    pub async fn del_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let op = format!("delete address {addr}/{prefix_len} dev {index}");
        check_prefix(&op, addr, prefix_len)?;
        let mut msg = AddressMessage::default();
        msg.header.family = Family::of(addr).address_family();
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr));
        if addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Address(addr));
        }
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(op_err(op))
    }

    /// Addresses on link `index` as `(address, prefix length)`.
    ///
    /// # Errors
    /// If the dump fails.
    pub async fn list_addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op_err(format!("list addresses dev {index}")))?
        {
            if msg.header.index != index {
                continue;
            }
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(addr) = addr {
                out.push((addr, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    fn route_message(route: &Route) -> Result<RouteMessage> {
        check_prefix(&route.to_string(), route.dst, route.prefix_len)?;
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst, route.prefix_len)
            .map_err(|e| NetlinkError::Invalid {
                op: format!("route {route}"),
                reason: e.to_string(),
            })?
            .table_id(if route.table == 0 {
                u32::from(RouteHeader::RT_TABLE_MAIN)
            } else {
                route.table
            });
        match route.target {
            RouteTarget::Dev(index) => {
                b = b.output_interface(index);
                if route.dst.is_ipv4() {
                    // As `ip route add <dst> dev <dev>` does without a gateway.
                    b = b.scope(RouteScope::Link);
                }
            }
            RouteTarget::Blackhole => b = b.kind(RouteType::BlackHole),
            RouteTarget::Unreachable => b = b.kind(RouteType::Unreachable),
        }
        if let Some(m) = route.metric {
            b = b.priority(m);
        }
        Ok(b.build())
    }

    /// `ip route add <route>`.
    ///
    /// # Errors
    /// If the kernel refuses (`EEXIST` if the route exists).
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        let msg = Self::route_message(route)?;
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(op_err(format!("add route {route}")))
    }

    /// `ip route del <route>`.
    ///
    /// # Errors
    /// If the kernel refuses (`ESRCH` if the route does not exist).
    pub async fn del_route(&self, route: &Route) -> Result<()> {
        let mut msg = Self::route_message(route)?;
        // Deletion matches on scope "nowhere" = any, like iproute2.
        msg.header.scope = RouteScope::NoWhere;
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(op_err(format!("delete route {route}")))
    }

    /// All routes of `family` in `table`, as the kernel reports them.
    ///
    /// # Errors
    /// If the dump fails.
    pub async fn list_routes(&self, family: Family, table: u32) -> Result<Vec<RouteMessage>> {
        let req = match family {
            Family::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            Family::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let mut stream = self.handle.route().get(req).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(op_err(format!(
            "list routes {} table {table}",
            family.as_str()
        )))? {
            if route_table(&msg) == table && msg.header.address_family == family.address_family() {
                out.push(msg);
            }
        }
        Ok(out)
    }

    /// `ip <family> route flush table <table>`; returns how many routes went.
    /// Refuses the main and local tables.
    ///
    /// # Errors
    /// If the table is main/local/unspec, or the dump or a deletion fails
    /// (a route that vanished meanwhile is not an error).
    pub async fn flush_table(&self, family: Family, table: u32) -> Result<usize> {
        let op = format!("flush routes {} table {table}", family.as_str());
        if matches!(table, 0 | 253..=255) {
            return Err(NetlinkError::Invalid {
                op,
                reason: "refusing to flush a system table".into(),
            });
        }
        let routes = self.list_routes(family, table).await?;
        let mut n = 0;
        for msg in routes {
            match self.handle.route().del(msg).execute().await {
                Ok(()) => n += 1,
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ESRCH => {}
                Err(e) => return Err(op_err(op)(e)),
            }
        }
        Ok(n)
    }

    fn rule_message(rule: &Rule) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = rule.family.address_family();
        msg.header.action = RuleAction::ToTable;
        if rule.table > 255 {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        } else {
            msg.header.table = u8::try_from(rule.table).unwrap_or_default();
        }
        msg.attributes.push(RuleAttribute::Table(rule.table));
        msg.attributes.push(RuleAttribute::Priority(rule.priority));
        if let Some((mark, mask)) = rule.fwmark {
            msg.attributes.push(RuleAttribute::FwMark(mark));
            msg.attributes.push(RuleAttribute::FwMask(mask));
        }
        if let Some(n) = rule.suppress_prefixlen {
            msg.attributes.push(RuleAttribute::SuppressPrefixLen(n));
        }
        if rule.invert {
            msg.header.flags |= RuleFlags::Invert;
        }
        msg
    }

    /// `ip rule add <rule>`.
    ///
    /// # Errors
    /// If the kernel refuses (`EEXIST` if an identical rule exists).
    pub async fn add_rule(&self, rule: &Rule) -> Result<()> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = Self::rule_message(rule);
        req.execute()
            .await
            .map_err(op_err(format!("add rule {rule}")))
    }

    /// `ip rule del <rule>`.
    ///
    /// # Errors
    /// If the kernel refuses (`ENOENT` if no such rule).
    pub async fn del_rule(&self, rule: &Rule) -> Result<()> {
        self.handle
            .rule()
            .del(Self::rule_message(rule))
            .execute()
            .await
            .map_err(op_err(format!("delete rule {rule}")))
    }

    /// `ip <family> rule show`: rules that look up a table, in kernel order.
    /// Rules with other actions or selectors this module does not model are
    /// reported with only the fields it knows.
    ///
    /// # Errors
    /// If the dump fails.
    pub async fn list_rules(&self, family: Family) -> Result<Vec<Rule>> {
        let mut stream = self.handle.rule().get(family.ip_version()).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(op_err(format!("list rules {}", family.as_str())))?
        {
            if msg.header.family != family.address_family() {
                continue;
            }
            let mut rule = Rule::lookup(family, 0, u32::from(msg.header.table));
            rule.invert = msg.header.flags.contains(RuleFlags::Invert);
            let (mut mark, mut mask) = (None, None);
            for a in &msg.attributes {
                match a {
                    RuleAttribute::Priority(p) => rule.priority = *p,
                    RuleAttribute::Table(t) => rule.table = *t,
                    RuleAttribute::FwMark(m) => mark = Some(*m),
                    RuleAttribute::FwMask(m) => mask = Some(*m),
                    RuleAttribute::SuppressPrefixLen(n) if *n != u32::MAX => {
                        rule.suppress_prefixlen = Some(*n);
                    }
                    _ => {}
                }
            }
            if let Some(mark) = mark {
                rule.fwmark = Some((mark, mask.unwrap_or(u32::MAX)));
            }
            out.push(rule);
        }
        Ok(out)
    }

    /// `ip link set dev <index> netns <fd> [name <name>]`: move a link into
    /// the network namespace referred to by `netns` (an open
    /// `/run/netns/<name>` or `/proc/<pid>/ns/net`), renaming it there in
    /// the same step when `name` is given (so the name only has to be free
    /// in the target).
    ///
    /// # Errors
    /// If the kernel refuses (`EEXIST` when the name is taken there).
    pub async fn move_link_to_netns_fd(
        &self,
        index: u32,
        netns: BorrowedFd<'_>,
        name: Option<&str>,
    ) -> Result<()> {
        let fd = netns.as_raw_fd();
        let mut msg = LinkUnspec::new_with_index(index).setns_by_fd(fd);
        if let Some(name) = name {
            msg = msg.name(name);
        }
        let renamed = name.map_or(String::new(), |n| format!(" name {n}"));
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(op_err(format!("set link {index} netns fd {fd}{renamed}")))
    }

    /// `ip link set dev <index> netns <pid>`: move a link into the network
    /// namespace of process `pid`.
    ///
    /// # Errors
    /// If the kernel refuses.
    pub async fn move_link_to_netns_pid(&self, index: u32, pid: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).setns_by_pid(pid).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(op_err(format!("set link {index} netns pid {pid}")))
    }

    /// `ip link del dev <index>`.
    ///
    /// # Errors
    /// If the kernel refuses (`ENODEV` if no such link).
    pub async fn del_link(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(op_err(format!("delete link {index}")))
    }
}

/// The unspecified address of `family` (`0.0.0.0` or `::`), for default routes.
#[must_use]
pub fn default_dst(family: Family) -> IpAddr {
    family.unspecified()
}

/// The index of the interface called `name` in the calling thread's
/// network namespace, or `None` if there is none (`if_nametoindex`).
#[must_use]
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

/// The name of interface `index` in the calling thread's network
/// namespace, or `None` if there is none (`if_indextoname`).
#[must_use]
pub fn ifname(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes the call may write.
    if unsafe { libc::if_indextoname(index, name.as_mut_ptr()) }.is_null() {
        return None;
    }
    // SAFETY: on success the kernel left a NUL-terminated name in `name`.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
pub(crate) mod testns {
    //! Throwaway network namespaces for this crate's unit tests.

    use std::{
        fs::File,
        os::fd::AsRawFd,
        process::Command,
        sync::atomic::{AtomicU32, Ordering},
    };

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A namespace `vpnt-<pid>-<n>`, deleted on drop (also while unwinding).
    pub struct TestNs {
        name: String,
    }

    impl TestNs {
        pub fn new() -> Self {
            let name = format!(
                "vpnt-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .expect("run ip netns add");
            assert!(
                out.status.success(),
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ns = Self { name };
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }

        pub fn name(&self) -> &str {
            &self.name
        }

        /// Runs `ip -n <ns> <args>`, panics on failure, returns stdout.
        pub fn ip(&self, args: &[&str]) -> String {
            let out = Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(args)
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip -n {} {}: {}",
                self.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("utf-8 from ip")
        }

        /// `ip -n <ns> -j <args>` parsed as JSON (empty output is `[]`).
        pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
            let mut all = vec!["-j"];
            all.extend_from_slice(args);
            let s = self.ip(&all);
            if s.trim().is_empty() {
                return serde_json::Value::Array(Vec::new());
            }
            serde_json::from_str(&s).expect("json from ip")
        }

        /// Runs `f` on a new thread that has entered this namespace; a panic
        /// in `f` is re-raised here (after which the guard still drops).
        pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
            let path = format!("/run/netns/{}", self.name);
            let file = File::open(&path).expect("open netns file");
            std::thread::scope(|s| {
                let h = s.spawn(move || {
                    // SAFETY: setns on a valid namespace fd; it only affects
                    // this thread, which is discarded afterwards.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    drop(file);
                    f()
                });
                match h.join() {
                    Ok(r) => r,
                    Err(p) => std::panic::resume_unwind(p),
                }
            })
        }

        /// Like [`run`](Self::run) with a current-thread tokio runtime.
        pub fn block_on<R: Send, F: std::future::Future<Output = R>>(
            &self,
            f: impl FnOnce() -> F + Send,
        ) -> R {
            self.run(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async {
                    tokio::time::timeout(std::time::Duration::from_secs(30), f()).await
                })
                .expect("test timed out after 30 s")
            })
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{testns::TestNs, *};

    fn find<'a>(v: &'a Value, key: &str, want: &str) -> Option<&'a Value> {
        v.as_array()?
            .iter()
            .find(|e| e.get(key).and_then(Value::as_str) == Some(want))
    }

    #[test]
    fn links_addresses_mtu() {
        let ns = TestNs::new();
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
        let (idx, err) = ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            let idx = nl.link_index("d0").await.unwrap();
            let missing = nl.link_index("nope0").await.unwrap_err();
            assert!(missing.is_not_found(), "{missing}");
            nl.set_mtu(idx, 1380).await.unwrap();
            nl.set_link_up(idx).await.unwrap();
            nl.add_address(idx, "100.64.0.2".parse().unwrap(), 10)
                .await
                .unwrap();
            nl.add_address(idx, "fd00::2".parse().unwrap(), 64)
                .await
                .unwrap();
            let dup = nl
                .add_address(idx, "100.64.0.2".parse().unwrap(), 10)
                .await
                .unwrap_err();
            assert!(dup.is_exists(), "{dup}");
            let listed = nl.list_addresses(idx).await.unwrap();
            assert!(listed.contains(&("100.64.0.2".parse().unwrap(), 10)));
            assert!(listed.contains(&("fd00::2".parse().unwrap(), 64)));
            let bad = nl
                .add_address(idx, "100.64.0.3".parse().unwrap(), 33)
                .await
                .unwrap_err();
            (idx, bad.to_string())
        });
        assert!(err.contains("prefix length 33"), "{err}");
        let links = ns.ip_json(&["link", "show", "d0"]);
        let l = &links[0];
        assert_eq!(l["ifindex"].as_u64(), Some(u64::from(idx)));
        assert_eq!(l["mtu"].as_u64(), Some(1380));
        assert!(l["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str() == Some("UP")));
        let addrs = ns.ip_json(&["addr", "show", "dev", "d0"]);
        let infos = addrs[0]["addr_info"].as_array().unwrap();
        assert!(infos
            .iter()
            .any(|a| a["local"] == "100.64.0.2" && a["prefixlen"] == 10));
        assert!(infos
            .iter()
            .any(|a| a["local"] == "fd00::2" && a["prefixlen"] == 64));

        ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            nl.del_address(idx, "100.64.0.2".parse().unwrap(), 10)
                .await
                .unwrap();
            nl.del_address(idx, "fd00::2".parse().unwrap(), 64)
                .await
                .unwrap();
            let again = nl
                .del_address(idx, "100.64.0.2".parse().unwrap(), 10)
                .await
                .unwrap_err();
            assert!(again.is_not_found(), "{again}");
            assert!(again.to_string().contains("delete address 100.64.0.2/10"));
            nl.set_link_down(idx).await.unwrap();
        });
        let addrs = ns.ip_json(&["addr", "show", "dev", "d0"]);
        let infos = addrs[0]["addr_info"].as_array().unwrap();
        assert!(!infos
            .iter()
            .any(|a| a["local"] == "100.64.0.2" || a["local"] == "fd00::2"));
        let links = ns.ip_json(&["link", "show", "d0"]);
        assert!(!links[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str() == Some("UP")));

        ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            nl.del_link(idx).await.unwrap();
            let gone = nl.del_link(idx).await.unwrap_err();
            assert!(gone.is_not_found(), "{gone}");
        });
        assert!(ns
            .ip_json(&["link", "show", "type", "veth"])
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn routes_in_a_table() {
        const T: u32 = 51820;
        let ns = TestNs::new();
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
        ns.ip(&["link", "set", "d0", "up"]);
        ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            let idx = nl.link_index("d0").await.unwrap();
            let r = |dst: &str, len, target| Route {
                dst: dst.parse().unwrap(),
                prefix_len: len,
                target,
                table: T,
                metric: None,
            };
            let dev4 = r("100.64.0.0", 10, RouteTarget::Dev(idx));
            let dev6 = r("fd00::", 8, RouteTarget::Dev(idx));
            let bh4 = Route {
                metric: Some(4096),
                ..r("0.0.0.0", 0, RouteTarget::Blackhole)
            };
            let un6 = Route {
                metric: Some(4096),
                ..r("::", 0, RouteTarget::Unreachable)
            };
            for route in [&dev4, &dev6, &bh4, &un6] {
                nl.add_route(route).await.unwrap();
            }
            let dup = nl.add_route(&dev4).await.unwrap_err();
            assert!(dup.is_exists(), "{dup}");
            assert!(dup.to_string().contains("add route 100.64.0.0/10"), "{dup}");
            assert_eq!(nl.list_routes(Family::V4, T).await.unwrap().len(), 2);
            nl.del_route(&dev4).await.unwrap();
            let gone = nl.del_route(&dev4).await.unwrap_err();
            assert!(gone.is_not_found(), "{gone}");
        });
        let v4 = ns.ip_json(&["-4", "route", "show", "table", "51820"]);
        assert!(find(&v4, "dst", "100.64.0.0/10").is_none());
        let bh = find(&v4, "dst", "default").expect("blackhole default");
        assert_eq!(bh["type"], "blackhole");
        assert_eq!(bh["metric"], 4096);
        let v6 = ns.ip_json(&["-6", "route", "show", "table", "51820"]);
        assert_eq!(find(&v6, "dst", "fd00::/8").unwrap()["dev"], "d0");
        assert_eq!(find(&v6, "dst", "default").unwrap()["type"], "unreachable");
        // Main table untouched.
        let main = ns.ip_json(&["-4", "route", "show", "table", "main"]);
        assert!(find(&main, "dst", "100.64.0.0/10").is_none());

        let (n4, n6) = ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            let e = nl.flush_table(Family::V4, 254).await.unwrap_err();
            assert!(matches!(e, NetlinkError::Invalid { .. }));
            (
                nl.flush_table(Family::V4, T).await.unwrap(),
                nl.flush_table(Family::V6, T).await.unwrap(),
            )
        });
        assert_eq!((n4, n6), (1, 2));
        assert!(ns
            .ip_json(&["-4", "route", "show", "table", "51820"])
            .as_array()
            .unwrap()
            .is_empty());
        assert!(ns
            .ip_json(&["-6", "route", "show", "table", "51820"])
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn rules_v4_v6() {
        let ns = TestNs::new();
        let rules = [
            Rule {
                fwmark: Some((0x8_0000, 0xff_0000)),
                ..Rule::lookup(Family::V4, 5209, 51820)
            },
            Rule {
                suppress_prefixlen: Some(0),
                ..Rule::lookup(Family::V4, 5208, 254)
            },
            Rule {
                fwmark: Some((0x8_0000, 0xff_0000)),
                invert: true,
                ..Rule::lookup(Family::V6, 5209, 51820)
            },
            Rule::lookup(Family::V6, 5210, 200),
        ];
        let (l4, l6) = ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            for r in &rules {
                nl.add_rule(r).await.unwrap();
            }
            let dup = nl.add_rule(&rules[0]).await.unwrap_err();
            assert!(dup.is_exists(), "{dup}");
            (
                nl.list_rules(Family::V4).await.unwrap(),
                nl.list_rules(Family::V6).await.unwrap(),
            )
        });
        for r in &rules {
            let listed = if r.family == Family::V4 { &l4 } else { &l6 };
            assert!(listed.contains(r), "{r} not in {listed:?}");
        }
        let j4 = ns.ip_json(&["-4", "rule", "show"]);
        let p = j4
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["priority"] == 5209)
            .unwrap();
        assert_eq!(p["table"], "51820");
        assert_eq!(p["fwmark"], "0x80000");
        assert_eq!(p["fwmask"], "0xff0000");
        let s = j4
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["priority"] == 5208)
            .unwrap();
        assert_eq!(s["table"], "main");
        assert_eq!(s["suppress_prefixlen"], 0);
        let j6 = ns.ip_json(&["-6", "rule", "show"]);
        let n = j6
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["priority"] == 5209)
            .unwrap();
        // iproute2 prints an inverted selector as `"not": null`.
        assert!(n.get("not").is_some(), "{n}");
        assert_eq!(n["fwmark"], "0x80000");

        ns.block_on(|| async {
            let nl = Netlink::new().unwrap();
            for r in &rules {
                nl.del_rule(r).await.unwrap();
            }
            let gone = nl.del_rule(&rules[0]).await.unwrap_err();
            assert!(gone.is_not_found(), "{gone}");
        });
        for fam in ["-4", "-6"] {
            let j = ns.ip_json(&[fam, "rule", "show"]);
            assert!(!j
                .as_array()
                .unwrap()
                .iter()
                .any(|r| (5208..=5210).contains(&r["priority"].as_u64().unwrap())));
        }
    }

    #[test]
    fn move_link_between_namespaces() {
        let a = TestNs::new();
        let b = TestNs::new();
        a.ip(&["link", "add", "d1", "type", "veth", "peer", "name", "d1p"]);
        a.ip(&["link", "add", "d2", "type", "veth", "peer", "name", "d2p"]);
        let b_file = std::fs::File::open(format!("/run/netns/{}", b.name())).unwrap();
        // A process living in namespace b, for the by-pid variant.
        let mut sleeper = std::process::Command::new("ip")
            .args(["netns", "exec", b.name(), "sleep", "20"])
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.block_on(|| async {
                let nl = Netlink::new().unwrap();
                let d1 = nl.link_index("d1").await.unwrap();
                let d2 = nl.link_index("d2").await.unwrap();
                use std::os::fd::AsFd;
                nl.move_link_to_netns_fd(d1, b_file.as_fd(), None)
                    .await
                    .unwrap();
                // `ip netns exec` execs sleep in the same pid once set up.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                loop {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if comm.trim() == "sleep" {
                        break;
                    }
                    assert!(std::time::Instant::now() < deadline, "sleeper not in netns");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                nl.move_link_to_netns_pid(d2, pid).await.unwrap();
                assert!(nl.link_index("d1").await.unwrap_err().is_not_found());
            });
        }));
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        if let Err(p) = res {
            std::panic::resume_unwind(p);
        }
        let links = b.ip_json(&["link", "show", "type", "veth"]);
        assert!(find(&links, "ifname", "d1").is_some(), "{links}");
        assert!(find(&links, "ifname", "d2").is_some(), "{links}");
    }
}
