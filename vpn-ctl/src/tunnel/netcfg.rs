//! What wg-quick does with netlink besides the UAPI: the link's MTU and
//! addresses, bringing it up, and one route per peer allowed IP in the
//! tunnel's table. Every change is recorded in [`Applied`] and undone by
//! [`undo`]; addresses go with the TUN link itself.
//!
//! Tables (`Table =`): `auto` is vpn's own table [`VPN_TABLE`] (vpn never
//! writes the main table; steering rules decide what looks it up), a
//! number is that table, `off` adds no routes. No policy rules are added
//! here.

use std::{collections::BTreeSet, net::IpAddr};

use crate::{
    config::{Config, IpPrefix, Table},
    netlink::{Netlink, NetlinkError, Route, RouteTarget},
};

/// The TUN's transmit queue (packets waiting for the daemon to read them).
/// The kernel's 500 for a TUN overflows under a 1 Gbit/s UDP burst while
/// the reader is busy sealing; TCP is bounded by its own small queues.
pub const TX_QUEUE_LEN: u32 = 5000;

/// vpn's routing table for `Table = auto`.
pub const VPN_TABLE: u32 = 30318;

/// The table routes go to, if any.
#[must_use]
pub fn table_id(table: Table) -> Option<u32> {
    match table {
        Table::Auto => Some(VPN_TABLE),
        Table::Off => None,
        Table::Id(n) => Some(n),
    }
}

/// The routes a config asks for: each peer allowed IP, masked, once.
#[must_use]
pub fn peer_routes(config: &Config, ifindex: u32) -> Vec<Route> {
    let Some(table) = table_id(config.interface.table) else {
        return Vec::new();
    };
    let set: BTreeSet<(IpAddr, u8)> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter())
        .map(|p| {
            let m = p.masked();
            (m.addr(), m.prefix_len())
        })
        .collect();
    set.into_iter()
        .map(|(dst, prefix_len)| Route {
            dst,
            prefix_len,
            target: RouteTarget::Dev(ifindex),
            table,
            metric: None,
        })
        .collect()
}

/// Changes made, for [`undo`].
#[derive(Debug, Default)]
pub struct Applied {
    /// Routes this device added.
    pub routes: Vec<Route>,
    /// Addresses added (they vanish with the link anyway).
    pub addresses: Vec<IpPrefix>,
}

/// Sets MTU and addresses, brings the link up, adds the peer routes.
///
/// # Errors
/// The first netlink failure; what was done so far is in `applied`.
pub async fn apply(
    nl: &Netlink,
    name: &str,
    ifindex: u32,
    config: &Config,
    mtu: u16,
    applied: &mut Applied,
) -> Result<(), NetlinkError> {
    nl.set_mtu(ifindex, u32::from(mtu)).await?;
    if let Err(e) = nl.set_tx_queue_len(ifindex, TX_QUEUE_LEN).await {
        log::warn!("cannot set txqueuelen {TX_QUEUE_LEN} on {name}: {e}");
    }
    for a in &config.interface.addresses {
        nl.add_address(ifindex, a.addr(), a.prefix_len()).await?;
        applied.addresses.push(*a);
    }
    nl.set_link_up(ifindex).await?;
    for r in peer_routes(config, ifindex) {
        match nl.add_route(&r).await {
            Ok(()) => applied.routes.push(r),
            // Someone's route for the same prefix: leave it, not ours.
            Err(e) if e.is_exists() => log::warn!("route {r} exists already; not added"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the routes in `applied` (those still there).
pub async fn undo(nl: &Netlink, applied: &mut Applied) {
    for r in applied.routes.drain(..) {
        match nl.del_route(&r).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => log::warn!("{e}"),
        }
    }
    applied.addresses.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_table_setting() {
        let key = crate::keys::PrivateKey::generate(&mut rand_core::OsRng);
        let peer = crate::keys::PrivateKey::generate(&mut rand_core::OsRng).public_key();
        let text = |table: &str| {
            format!(
                "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.1/24\n{table}\n\
                 [Peer]\nPublicKey = {peer}\nAllowedIPs = 100.64.0.9/24, fd00::2/128, 100.64.0.0/24\n",
                &*key.to_base64()
            )
        };
        let c = Config::parse(&text(""), "t.conf").unwrap();
        let r = peer_routes(&c, 7);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r
            .iter()
            .all(|r| r.table == VPN_TABLE && r.target == RouteTarget::Dev(7)));
        assert_eq!(r[0].dst.to_string(), "100.64.0.0");
        let c = Config::parse(&text("Table = off"), "t.conf").unwrap();
        assert!(peer_routes(&c, 7).is_empty());
        let c = Config::parse(&text("Table = 1234"), "t.conf").unwrap();
        assert!(peer_routes(&c, 7).iter().all(|r| r.table == 1234));
    }
}
