package natsbroker

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Connect connects to the NATS servers at url (a comma-separated list is
// allowed) and returns a broker that owns the connection: its Close closes
// it. The connection is named "wshub", never buffers messages while
// reconnecting (nats.ReconnectBufSize(-1), so Publish fails instead of
// queueing) and reconnects forever (nats.MaxReconnects(-1)); natsOpts are
// applied after these and may override them. opts may be nil for the
// defaults. Connect fails if no server answers, as nats.Connect does.
func Connect(url string, opts *Options, natsOpts ...nats.Option) (*Broker, error) {
	all := append([]nats.Option{
		nats.Name("wshub"),
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
	}, natsOpts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: connect: %w", err)
	}
	b, err := New(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	b.ownConn = true
	return b, nil
}
