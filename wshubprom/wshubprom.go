// Package wshubprom exports the figures of a wshub Hub (Hub.Stats) as
// Prometheus metrics, named wshub_*:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(wshubprom.NewCollector(hub, nil))
//	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Each scrape reads Hub.Stats once; the hub keeps its figures whether or
// not anything scrapes them. Counters end in _total, durations are in
// seconds and sizes in bytes, as the Prometheus documentation asks. Room
// names are never labels; with wshub.Options.RoomLabel, the
// wshub_label_messages_* counters carry the label it gives, as
// "label".
//
// It is a module of its own, so that wshub's core never depends on
// Prometheus.
package wshubprom

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wshub/wshub"
)

// NewCollector returns a collector of hub's figures. constLabels, which
// may be nil, are set on every metric: {"hub": "a"}, say, when one process
// serves several hubs.
func NewCollector(hub *wshub.Hub, constLabels prometheus.Labels) prometheus.Collector {
	c := &collector{hub: hub}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		desc := prometheus.NewDesc("wshub_"+name, help, labels, constLabels)
		c.descs = append(c.descs, desc)
		return desc
	}
	c.clients = d("clients", "Clients connected now.")
	c.rooms = d("rooms", "Rooms with at least one member now.")
	c.members = d("room_members", "Room memberships now, joins under way included: a client in three rooms counts three.")
	c.accepted = d("connections_accepted_total", "Upgrades that became clients.")
	c.refused = d("connections_refused_total", "Upgrades refused, by reason: auth, origin, handshake, limit, overload, closing.", "reason")
	c.closed = d("connections_closed_total", "Clients gone, by reason: normal, peer error, lost, queue full, write timeout, pong timeout, rate limit, invalid, engine, shutdown, server, token expired, signed out.", "reason")
	c.codes = d("connections_closed_by_code_total", "Clients gone, by the status code of the close handshake (1006: none; 4000: any other but 4001 and 4003).", "code")
	c.kicked = d("clients_kicked_total", "Clients closed for holding others up: a full send queue or a write timeout.")
	c.joins = d("joins_total", "Rooms joined, at a client's request or the server's.")
	c.leaves = d("leaves_total", "Rooms left, disconnects included.")
	c.joinRefused = d("join_refusals_total", "Joins clients asked for and did not get, by reason: denied, too many rooms, invalid, engine.", "reason")
	c.in = d("messages_received_total", "Messages read from clients, by type: publish, join, leave, presence, app, invalid.", "type")
	c.queued = d("messages_queued_total", "Messages queued for clients, by kind: message, replay, reply, presence, app.", "kind")
	c.out = d("messages_sent_total", "Queued messages written to a client's socket; a batch frame counts each.")
	c.dropped = d("messages_dropped_total", "Queued messages not written because their client was closed first.")
	c.bytes = d("sent_bytes_total", "Bytes of the data frames written to clients.")
	c.frames = d("sent_frames_total", "Data frames written to clients.")
	c.publishAck = d("publish_ack_duration_seconds", "Time from reading a client's publish to queueing its ack or error.")
	c.engineWait = d("engine_wait_duration_seconds", "Time from handing a room message to the engine to its confirmation.")
	c.batch = d("write_batch_messages", "Messages a client's writer took from its queue at once.")
	c.recoveries = d("recoveries_total", "Joins that asked to recover, by outcome: recovered, not recovered, no history.", "outcome")
	c.replayed = d("replayed_messages_total", "Messages replayed from history before a join's ack.")
	c.diffs = d("presence_diffs_total", "Presence diff frames queued for rooms' members.")
	c.entries = d("presence_diff_entries_total", "Joins and leaves listed in presence diffs.")
	c.engineErrs = d("engine_errors_total", "Engine calls that failed: publishes, history reads, follows.")
	c.reconnects = d("engine_reconnects_total", "Reconnections of the engine to its bus (natsbroker's engines count them).")
	c.published = d("label_messages_published_total", "Room messages handed to the engine by this hub, by the room's label (Options.RoomLabel).", "label")
	c.delivered = d("label_messages_delivered_total", "Room messages queued for members of this hub, by the room's label (Options.RoomLabel).", "label")
	return c
}

type collector struct {
	hub   *wshub.Hub
	descs []*prometheus.Desc

	clients, rooms, members                      *prometheus.Desc
	accepted, refused, closed, codes, kicked     *prometheus.Desc
	joins, leaves, joinRefused                   *prometheus.Desc
	in, queued, out, dropped, bytes, frames      *prometheus.Desc
	publishAck, engineWait, batch                *prometheus.Desc
	recoveries, replayed, diffs, entries         *prometheus.Desc
	engineErrs, reconnects, published, delivered *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.hub.Stats()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	byKey := func(d *prometheus.Desc, m map[string]uint64) {
		for k, v := range m {
			counter(d, v, k)
		}
	}
	histogram := func(d *prometheus.Desc, h wshub.Histogram) {
		buckets := make(map[float64]uint64, len(h.Bounds))
		var cum uint64
		for i, b := range h.Bounds {
			cum += h.Counts[i]
			buckets[b] = cum
		}
		ch <- prometheus.MustNewConstHistogram(d, h.Count(), h.Sum, buckets)
	}
	gauge(c.clients, s.Clients)
	gauge(c.rooms, s.Rooms)
	gauge(c.members, s.Members)
	counter(c.accepted, s.Accepted)
	byKey(c.refused, s.Refusals)
	byKey(c.closed, s.Closes)
	for code, v := range s.CloseCodes {
		counter(c.codes, v, strconv.Itoa(code))
	}
	counter(c.kicked, s.Kicked)
	counter(c.joins, s.Joins)
	counter(c.leaves, s.Leaves)
	byKey(c.joinRefused, s.JoinRefusals)
	byKey(c.in, s.In)
	byKey(c.queued, s.Queued)
	counter(c.out, s.MessagesOut)
	counter(c.dropped, s.Dropped)
	counter(c.bytes, s.BytesOut)
	counter(c.frames, s.FramesOut)
	histogram(c.publishAck, s.PublishAck)
	histogram(c.engineWait, s.EngineWait)
	histogram(c.batch, s.QueueDepth)
	byKey(c.recoveries, s.Recoveries)
	counter(c.replayed, s.Replayed)
	counter(c.diffs, s.PresenceDiffs)
	counter(c.entries, s.PresenceEntries)
	counter(c.engineErrs, s.EngineErrors)
	counter(c.reconnects, s.EngineReconnects)
	for label, l := range s.Labels {
		counter(c.published, l.Published, label)
		counter(c.delivered, l.Delivered, label)
	}
}
