//! Prometheus metrics through the `metrics` facade. The core counts in plain
//! integers; once a second the driver publishes the deltas, so the hot path pays
//! no metrics cost. The binary installs the recorder and serves /metrics.

use natter_turn_core::{AuthFailure, Refusal, Stats};

/// What has been published so far, to turn the core's totals into increments.
#[derive(Default)]
pub(crate) struct Published {
    last: Stats,
}

impl Published {
    pub(crate) fn publish(
        &mut self,
        stats: &Stats,
        allocations: usize,
        connections: usize,
        draining: bool,
    ) {
        let last = &self.last;
        metrics::gauge!("natter_turn_allocations").set(allocations as f64);
        metrics::gauge!("natter_turn_draining").set(if draining { 1.0 } else { 0.0 });
        metrics::gauge!("natter_turn_stream_connections").set(connections as f64);
        metrics::counter!("natter_turn_allocations_created_total")
            .increment(stats.allocations_created - last.allocations_created);
        metrics::counter!("natter_turn_allocations_closed_total")
            .increment(stats.allocations_closed - last.allocations_closed);
        metrics::counter!("natter_turn_relayed_packets_total", "direction" => "to_peer")
            .increment(stats.packets_to_peer - last.packets_to_peer);
        metrics::counter!("natter_turn_relayed_packets_total", "direction" => "to_client")
            .increment(stats.packets_to_client - last.packets_to_client);
        metrics::counter!("natter_turn_relayed_bytes_total", "direction" => "to_peer")
            .increment(stats.bytes_to_peer - last.bytes_to_peer);
        metrics::counter!("natter_turn_relayed_bytes_total", "direction" => "to_client")
            .increment(stats.bytes_to_client - last.bytes_to_client);
        metrics::counter!("natter_turn_binding_requests_total")
            .increment(stats.binding_requests - last.binding_requests);
        metrics::counter!("natter_turn_challenges_total")
            .increment(stats.challenges - last.challenges);
        metrics::counter!("natter_turn_malformed_total")
            .increment(stats.malformed - last.malformed);
        for failure in AuthFailure::ALL {
            let i = failure as usize;
            metrics::counter!("natter_turn_auth_failures_total", "reason" => failure.as_str())
                .increment(stats.auth_failures[i] - last.auth_failures[i]);
        }
        for refusal in Refusal::ALL {
            let i = refusal as usize;
            metrics::counter!("natter_turn_refusals_total", "reason" => refusal.as_str())
                .increment(stats.refusals[i] - last.refusals[i]);
        }
        self.last = stats.clone();
    }
}
