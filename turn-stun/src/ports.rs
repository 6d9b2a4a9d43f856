//! The relay port range against the host's ephemeral ports. The kernel takes the
//! local port of every outgoing connection (and of every unbound UDP send) from
//! `net.ipv4.ip_local_port_range`; relay ports inside it compete with the whole
//! host for the same ports — on a hostNetwork pod that is every process on the
//! node — so relay binds fail at random and the host's connections run short.
//! Ports listed in `net.ipv4.ip_local_reserved_ports` are never handed out, so
//! reserving the relay range there is the other way out.

use tracing::{debug, warn};

use crate::PortRange;

const EPHEMERAL: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// `ip_local_port_range`'s content: two numbers separated by white space.
pub(crate) fn parse_ephemeral(text: &str) -> Option<PortRange> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let start = parts.next()?.ok()?;
    let end = parts.next()?.ok()?;
    (start <= end).then_some(PortRange { start, end })
}

/// `ip_local_reserved_ports`' content: comma-separated ports and `a-b` ranges
/// (empty when nothing is reserved). Unparsable entries are skipped.
pub(crate) fn parse_reserved(text: &str) -> Vec<PortRange> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse::<PortRange>().ok())
        .filter(|r| r.start <= r.end)
        .collect()
}

/// How many relay ports the kernel may also hand out as ephemeral ports: those of
/// `relay` inside `ephemeral` and not in a `reserved` range.
pub(crate) fn ephemeral_conflicts(
    relay: PortRange,
    ephemeral: PortRange,
    reserved: &[PortRange],
) -> u32 {
    let start = relay.start.max(ephemeral.start);
    let end = relay.end.min(ephemeral.end);
    if start > end {
        return 0;
    }
    (start..=end)
        .filter(|p| !reserved.iter().any(|r| (r.start..=r.end).contains(p)))
        .count() as u32
}

/// The warning for `conflicts` ports, naming both ranges and both ways out.
pub(crate) fn conflict_message(relay: PortRange, ephemeral: PortRange, conflicts: u32) -> String {
    format!(
        "turn.port_range {relay} overlaps this host's ephemeral ports {ephemeral} \
         (net.ipv4.ip_local_port_range) on {conflicts} ports: the kernel also hands those \
         out to outgoing connections, so relay binds can fail and the host can run short of \
         local ports. Move turn.port_range out of {ephemeral} (the default 20000-29999 is \
         outside Linux's default 32768-60999) or reserve the relay ports with \
         net.ipv4.ip_local_reserved_ports"
    )
}

/// Reads the host's ranges (the network namespace's: a hostNetwork pod sees the
/// node's) and warns when the relay range competes with them.
pub(crate) fn check_host(relay: PortRange) {
    let Some(ephemeral) = std::fs::read_to_string(EPHEMERAL)
        .ok()
        .as_deref()
        .and_then(parse_ephemeral)
    else {
        debug!("cannot read {EPHEMERAL}; relay ports not checked against ephemeral ports");
        return;
    };
    let reserved = std::fs::read_to_string(RESERVED)
        .map(|t| parse_reserved(&t))
        .unwrap_or_default();
    let conflicts = ephemeral_conflicts(relay, ephemeral, &reserved);
    if conflicts > 0 {
        warn!("{}", conflict_message(relay, ephemeral, conflicts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PORT_RANGE;

    fn r(start: u16, end: u16) -> PortRange {
        PortRange { start, end }
    }

    /// Linux's default `ip_local_port_range`.
    const LINUX_DEFAULT: PortRange = PortRange {
        start: 32768,
        end: 60999,
    };
    /// Kubernetes' default `--service-node-port-range`.
    const NODE_PORTS: PortRange = PortRange {
        start: 30000,
        end: 32767,
    };

    #[test]
    fn the_default_relay_range_avoids_ephemeral_and_node_ports() {
        assert_eq!(
            ephemeral_conflicts(DEFAULT_PORT_RANGE, LINUX_DEFAULT, &[]),
            0
        );
        assert_eq!(ephemeral_conflicts(DEFAULT_PORT_RANGE, NODE_PORTS, &[]), 0);
        assert_eq!(DEFAULT_PORT_RANGE.len(), 10_000);
    }

    #[test]
    fn overlap_is_counted_and_reserved_ports_do_not_count() {
        // The old default, 49152-65535, shares 49152-60999 with Linux's.
        let old = r(49152, 65535);
        assert_eq!(ephemeral_conflicts(old, LINUX_DEFAULT, &[]), 11_848);
        assert_eq!(
            ephemeral_conflicts(old, LINUX_DEFAULT, &[r(49152, 65535)]),
            0
        );
        assert_eq!(
            ephemeral_conflicts(old, LINUX_DEFAULT, &[r(49152, 50000), r(60999, 60999)]),
            11_848 - 849 - 1
        );
        // Touching edges.
        assert_eq!(ephemeral_conflicts(r(61000, 65535), LINUX_DEFAULT, &[]), 0);
        assert_eq!(ephemeral_conflicts(r(60999, 61000), LINUX_DEFAULT, &[]), 1);
        assert_eq!(ephemeral_conflicts(r(20000, 32768), LINUX_DEFAULT, &[]), 1);
        let msg = conflict_message(old, LINUX_DEFAULT, 11_848);
        assert!(
            msg.contains("49152-65535")
                && msg.contains("32768-60999")
                && msg.contains("ip_local_reserved_ports"),
            "{msg}"
        );
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_ephemeral("32768\t60999\n"), Some(LINUX_DEFAULT));
        assert_eq!(parse_ephemeral("1024 65535"), Some(r(1024, 65535)));
        assert_eq!(parse_ephemeral("60999 32768"), None);
        assert_eq!(parse_ephemeral("garbage"), None);
        assert_eq!(parse_ephemeral(""), None);
        assert_eq!(parse_reserved("\n"), vec![]);
        assert_eq!(
            parse_reserved("8080,20000-29999\n"),
            vec![r(8080, 8080), r(20000, 29999)]
        );
        // This machine's own file parses (every Linux has it).
        if let Ok(text) = std::fs::read_to_string(EPHEMERAL) {
            assert!(parse_ephemeral(&text).is_some(), "{text:?}");
        }
    }
}
