//! vpn's policy routing: steered (marked) traffic looks up vpn's own table,
//! whose last resort is a blackhole, so it has nowhere to go but the tunnel.
//!
//! ```text
//! priority P:    fwmark M/M lookup T                    (IPv4 and IPv6)
//! full-tunnel mode only (everything but direct sockets, as wg-quick does):
//! priority P+1:  lookup main suppress_prefixlength 0    (LAN routes still win)
//! priority P+2:  not fwmark D/D lookup T                (excluded: main)
//! table T:       <tunnel routes>                        (added by the device)
//!                blackhole default metric MAX           (fail closed)
//! ```
//! The main table, other tools' rules and global sysctls are never touched.
//! While a tunnel daemon runs, it calls [`repair`] to put back what another
//! tool deleted.
//! The defaults keep clear of wg-quick (table and mark 51820, rules at its own
//! priorities), Tailscale (table 52, rules 5210-5270, mark bits 0xff0000) and
//! Mullvad (table 0x6d6f6c65 = 1836018789).
use std::net::IpAddr;

use crate::netlink::{default_dst, Family, Netlink, NetlinkError, Route, RouteTarget, Rule};

/// vpn's routing table.
pub const DEFAULT_TABLE: u32 = 30318;
/// Priority of vpn's fwmark rule: before main (32766), after Tailscale's.
pub const DEFAULT_PRIORITY: u32 = 10318;
/// The blackhole loses against any route the tunnel adds.
pub const BLACKHOLE_METRIC: u32 = u32::MAX;
const MAIN_TABLE: u32 = 254;

/// Tables vpn refuses to use: unspec, default, main, local, and the ones the
/// tools named above own.
const FOREIGN_TABLES: [u32; 7] = [0, 253, 254, 255, 51820, 52, 1_836_018_789];

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("table {0} belongs to the system or another VPN tool; choose another with --table")]
    ForeignTable(u32),
    #[error("rule priority {priority} is taken by another rule ({rule}); choose another with --priority")]
    PriorityTaken { priority: u32, rule: String },
    #[error(
        "fwmark bit {mark:#x} is already used by another rule ({rule}); choose another with --mark"
    )]
    MarkTaken { mark: u32, rule: String },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The rule and the fallback route of one tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub table: u32,
    pub priority: u32,
    pub mark: u32,
    pub mask: u32,
    /// Bit of sockets that stay direct in full-tunnel mode.
    pub direct_mark: u32,
    /// Full-tunnel mode: all traffic but direct sockets looks up `table`.
    pub full: bool,
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

impl Policy {
    /// The rules of this mode, in priority order.
    #[must_use]
    pub fn rules(&self, family: Family) -> Vec<Rule> {
        let mut rules = vec![Rule {
            fwmark: Some((self.mark, self.mask)),
            ..Rule::lookup(family, self.priority, self.table)
        }];
        if self.full {
            rules.push(Rule {
                suppress_prefixlen: Some(0),
                ..Rule::lookup(family, self.priority + 1, MAIN_TABLE)
            });
            rules.push(Rule {
                fwmark: Some((self.direct_mark, self.direct_mark)),
                invert: true,
                ..Rule::lookup(family, self.priority + 2, self.table)
            });
        }
        rules
    }

    /// Both modes' rules, for removal whatever mode was active.
    fn all_rules(&self, family: Family) -> Vec<Rule> {
        Policy {
            full: true,
            ..*self
        }
        .rules(family)
    }

    #[must_use]
    pub fn blackhole(&self, family: Family) -> Route {
        let dst: IpAddr = default_dst(family);
        Route {
            dst,
            prefix_len: 0,
            target: RouteTarget::Blackhole,
            table: self.table,
            metric: Some(BLACKHOLE_METRIC),
        }
    }

    /// Refuses a table, priority or mark bit that someone else already uses.
    pub async fn check_conflicts(&self, nl: &Netlink) -> Result<(), RoutingError> {
        if FOREIGN_TABLES.contains(&self.table) {
            return Err(RoutingError::ForeignTable(self.table));
        }
        let ours_bits = self.mask | self.direct_mark;
        for family in FAMILIES {
            let ours = self.all_rules(family);
            for rule in nl.list_rules(family).await? {
                if ours.contains(&rule) {
                    continue;
                }
                if (self.priority..=self.priority + 2).contains(&rule.priority) {
                    return Err(RoutingError::PriorityTaken {
                        priority: rule.priority,
                        rule: rule.to_string(),
                    });
                }
                if let Some((mark, mask)) = rule.fwmark {
                    if mark & mask & ours_bits != 0 {
                        return Err(RoutingError::MarkTaken {
                            mark: self.mark,
                            rule: rule.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds the rules and blackholes that are missing; returns what it added.
    /// On a failure, what this call added is taken back.
    pub async fn install(&self, nl: &Netlink) -> Result<Vec<String>, RoutingError> {
        let mut added: Vec<Change> = Vec::new();
        let result = self.install_inner(nl, &mut added).await;
        if result.is_err() {
            for change in added.iter().rev() {
                let _ = change.undo(nl).await;
            }
        }
        result.map(|()| added.iter().map(ToString::to_string).collect())
    }

    async fn install_inner(
        &self,
        nl: &Netlink,
        added: &mut Vec<Change>,
    ) -> Result<(), RoutingError> {
        for family in FAMILIES {
            let route = self.blackhole(family);
            match nl.add_route(&route).await {
                Ok(()) => added.push(Change::Route(route)),
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(e.into()),
            }
            let present = nl.list_rules(family).await?;
            for rule in self.rules(family) {
                if !present.contains(&rule) {
                    nl.add_rule(&rule).await?;
                    added.push(Change::Rule(rule));
                }
            }
        }
        Ok(())
    }

    /// Re-adds whatever another tool deleted (same as `install`, named for
    /// the watcher that calls it).
    pub async fn repair(&self, nl: &Netlink) -> Result<Vec<String>, RoutingError> {
        self.install(nl).await
    }

    /// Removes the rules of the other mode (after a mode switch).
    pub async fn prune(&self, nl: &Netlink) -> Result<(), RoutingError> {
        for family in FAMILIES {
            let keep = self.rules(family);
            for rule in self
                .all_rules(family)
                .into_iter()
                .filter(|r| !keep.contains(r))
            {
                Change::Rule(rule).undo(nl).await?;
            }
        }
        Ok(())
    }

    /// Removes the rules (of either mode) and blackholes; absent ones are
    /// not an error.
    pub async fn remove(&self, nl: &Netlink) -> Result<(), RoutingError> {
        for family in FAMILIES {
            for rule in self.all_rules(family) {
                Change::Rule(rule).undo(nl).await?;
            }
            Change::Route(self.blackhole(family)).undo(nl).await?;
        }
        Ok(())
    }
}

/// The tunnel daemon's watch (every second): puts back vpn's fwmark rules
/// for this tunnel's table when another tool deleted them, as long as
/// steering is in place (its blackhole fallback is in the table). The default priority and mark are repaired; a priority
/// taken meanwhile by someone else is left alone, with a warning.
pub async fn repair(nl: &Netlink, table: u32) {
    let policy = Policy {
        table,
        priority: DEFAULT_PRIORITY,
        mark: super::DEFAULT_MARK,
        mask: super::DEFAULT_MARK,
        direct_mark: super::DEFAULT_DIRECT_MARK,
        full: false,
    };
    let Ok(routes) = nl.list_routes(Family::V4, table).await else {
        return;
    };
    let steered = routes
        .iter()
        .any(|r| r.header.kind == rtnetlink::packet_route::route::RouteType::BlackHole);
    if !steered {
        return;
    }
    if let Err(e) = policy.check_conflicts(nl).await {
        log::warn!("not repairing vpn's rules: {e}");
        return;
    }
    match policy.repair(nl).await {
        Ok(fixed) => {
            for f in fixed {
                log::warn!("put back {f} (another tool had deleted it)");
            }
        }
        Err(e) => log::warn!("repairing vpn's rules: {e}"),
    }
}

enum Change {
    Rule(Rule),
    Route(Route),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Rule(r) => write!(f, "rule {r}"),
            Change::Route(r) => write!(f, "route {r}"),
        }
    }
}

impl Change {
    async fn undo(&self, nl: &Netlink) -> Result<(), NetlinkError> {
        let r = match self {
            Change::Rule(r) => nl.del_rule(r).await,
            Change::Route(r) => nl.del_route(r).await,
        };
        match r {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::testns::TestNs;

    fn policy() -> Policy {
        Policy {
            table: DEFAULT_TABLE,
            priority: DEFAULT_PRIORITY,
            mark: 0x1000_0000,
            mask: 0x1000_0000,
            direct_mark: 0x2000_0000,
            full: false,
        }
    }

    #[test]
    fn full_mode_adds_the_suppress_and_not_rules_and_switches_back() {
        let ns = TestNs::new();
        let full = Policy {
            full: true,
            ..policy()
        };
        ns.block_on(|| async move {
            let nl = Netlink::new().unwrap();
            full.check_conflicts(&nl).await.unwrap();
            assert_eq!(full.install(&nl).await.unwrap().len(), 8);
        });
        let rules = ns.ip(&["rule", "show"]);
        assert!(
            rules.contains("10319:\tfrom all lookup main suppress_prefixlength 0"),
            "{rules}"
        );
        assert!(
            rules.contains("10320:\tnot from all fwmark 0x20000000/0x20000000 lookup 30318"),
            "{rules}"
        );
        let split = policy();
        ns.block_on(|| async move {
            let nl = Netlink::new().unwrap();
            split.install(&nl).await.unwrap();
            split.prune(&nl).await.unwrap();
        });
        let rules = ns.ip(&["rule", "show"]);
        assert!(
            rules.contains("10318:") && !rules.contains("10319:") && !rules.contains("10320:"),
            "{rules}"
        );
        ns.block_on(|| async move { split.remove(&Netlink::new().unwrap()).await.unwrap() });
        assert!(!ns.ip(&["-6", "rule", "show"]).contains("30318"));
    }

    #[test]
    fn install_is_idempotent_repairs_and_removes() {
        let ns = TestNs::new();
        let p = policy();
        ns.block_on(|| async move {
            let nl = Netlink::new().unwrap();
            p.check_conflicts(&nl).await.unwrap();
            assert_eq!(p.install(&nl).await.unwrap().len(), 4);
            assert!(
                p.install(&nl).await.unwrap().is_empty(),
                "second install changes nothing"
            );
        });
        let rules = ns.ip(&["rule", "show"]);
        assert!(
            rules.contains("10318:\tfrom all fwmark 0x10000000/0x10000000 lookup 30318"),
            "{rules}"
        );
        let routes = ns.ip(&["route", "show", "table", "30318"]);
        assert!(routes.contains("blackhole default"), "{routes}");
        assert!(ns
            .ip(&["-6", "route", "show", "table", "30318"])
            .contains("blackhole default"));

        // Another tool deletes the rule: repair puts it back.
        ns.ip(&["rule", "del", "priority", "10318"]);
        let repaired =
            ns.block_on(|| async move { p.repair(&Netlink::new().unwrap()).await.unwrap() });
        assert_eq!(repaired.len(), 1, "{repaired:?}");
        assert!(ns.ip(&["rule", "show"]).contains("lookup 30318"));

        ns.block_on(|| async move {
            let nl = Netlink::new().unwrap();
            p.remove(&nl).await.unwrap();
            p.remove(&nl).await.unwrap();
        });
        assert!(!ns.ip(&["rule", "show"]).contains("30318"));
        assert!(!ns.ip(&["-6", "rule", "show"]).contains("30318"));
        assert_eq!(ns.ip(&["route", "show", "table", "30318"]).trim(), "");
    }

    #[test]
    fn conflicts_are_refused() {
        let ns = TestNs::new();
        ns.ip(&["rule", "add", "priority", "10318", "lookup", "100"]);
        ns.ip(&[
            "rule",
            "add",
            "priority",
            "20000",
            "fwmark",
            "0x10000000",
            "lookup",
            "200",
        ]);
        let p = policy();
        let e = ns.block_on(|| async move {
            p.check_conflicts(&Netlink::new().unwrap())
                .await
                .unwrap_err()
        });
        assert!(matches!(e, RoutingError::PriorityTaken { .. }), "{e}");
        let p2 = Policy {
            priority: 10319,
            ..p
        };
        let e = ns.block_on(|| async move {
            p2.check_conflicts(&Netlink::new().unwrap())
                .await
                .unwrap_err()
        });
        assert!(matches!(e, RoutingError::MarkTaken { .. }), "{e}");
        assert!(e.to_string().contains("--mark"));
        let p3 = Policy { table: 254, ..p };
        let e = ns.block_on(|| async move {
            p3.check_conflicts(&Netlink::new().unwrap())
                .await
                .unwrap_err()
        });
        assert!(matches!(e, RoutingError::ForeignTable(254)));
    }
}
