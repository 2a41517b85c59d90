package natsbroker

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Reconnect pacing of Connect: after losing its server, or failing to
// reach any, nats.go tries every server of the list, then sleeps
// reconnectWait plus a random delay of up to reconnectJitter before the
// next round. The jitter spreads the hubs of a cluster over the window, so
// a restarted server is not hit by all of them at once.
const (
	reconnectWait   = 100 * time.Millisecond
	reconnectJitter = 150 * time.Millisecond
)

// Connect connects to the NATS servers at url (a comma-separated list is
// allowed) and returns a broker that owns the connection: its Close closes
// it. The connection is named "wshub", never buffers messages while
// reconnecting (nats.ReconnectBufSize(-1), so Publish fails instead of
// queueing), reconnects forever (nats.MaxReconnects(-1)) and quickly:
// after trying every server it waits 100 ms plus a random jitter of up to
// 150 ms, with or without TLS (nats.ReconnectWait, nats.ReconnectJitter;
// nats.go's defaults are 2 s plus up to 100 ms, or 1 s with TLS). With
// Options.RetryOnFailedConnect it also sets nats.RetryOnFailedConnect.
// natsOpts are applied after these and may override them. opts may be
// nil for the defaults.
//
// Connect fails if no server answers, as nats.Connect does, unless
// Options.RetryOnFailedConnect is set: it then returns a broker at once
// whose connection keeps trying at the pace above. It always fails on a
// malformed url or invalid Options.
func Connect(url string, opts *Options, natsOpts ...nats.Option) (*Broker, error) {
	nc, err := dial(url, opts, natsOpts)
	if err != nil {
		return nil, err
	}
	b, err := New(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	b.ownConn = true
	return b, nil
}

// ConnectLog connects as Connect does, with the same connection defaults,
// and returns a Log that owns the connection: its Close closes it.
func ConnectLog(url string, opts *Options, natsOpts ...nats.Option) (*Log, error) {
	nc, err := dial(url, opts, natsOpts)
	if err != nil {
		return nil, err
	}
	l, err := NewLog(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	l.ownConn = true
	return l, nil
}

// dial makes the connection of Connect and ConnectLog.
func dial(url string, opts *Options, natsOpts []nats.Option) (*nats.Conn, error) {
	all := []nats.Option{
		nats.Name("wshub"),
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
	}
	if opts != nil && opts.RetryOnFailedConnect {
		all = append(all, nats.RetryOnFailedConnect(true))
	}
	nc, err := nats.Connect(url, append(all, natsOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: connect: %w", err)
	}
	return nc, nil
}
