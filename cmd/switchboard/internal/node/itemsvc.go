package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/segmentio/kafka-go"

	"github.com/switchboard/switchboard/config"
	"github.com/switchboard/switchboard/consumers"
	"github.com/switchboard/switchboard/consumers/kafkaconn"
	"github.com/switchboard/switchboard/hub/takedown"
	"github.com/switchboard/switchboard/producers"
	"github.com/switchboard/switchboard/producers/itemsvc"
)

// RunItemService runs the simulated item service alone, against
// kafka.brokers, until ctx ends (switchboard itemsvc).
func RunItemService(ctx context.Context, cfg config.Config) error {
	log := newLogger(cfg.Log, os.Stderr)
	if cfg.Embedded() {
		return logged(log, errors.New("itemsvc: set kafka.brokers (--kafka-brokers) to the cluster to serve"))
	}
	stopTracing, err := startTracing(ctx, cfg, log)
	if err != nil {
		return logged(log, err)
	}
	defer stopTracing()
	if err := kafkaconn.Check(ctx, cfg.KafkaConn(), cfg.Kafka.Brokers); err != nil {
		return logged(log, fmt.Errorf("kafka.brokers: %w", err))
	}
	p, err := producers.New(producers.Config{Brokers: cfg.Kafka.Brokers, Conn: cfg.KafkaConn()}, log)
	if err != nil {
		return logged(log, err)
	}
	defer p.Close()
	svc, err := newItemService(cfg, cfg.Kafka.Brokers, p, log)
	if err != nil {
		return logged(log, err)
	}
	return svc.Run(ctx)
}

// newItemService builds the simulated item service of the contract; with
// --demo it answers the demo restores command too.
func newItemService(cfg config.Config, brokers []string, p *producers.Producer, log *slog.Logger) (*itemsvc.Service, error) {
	cmds, err := compileCommands(declaredCommands(cfg, nil))
	if err != nil {
		return nil, err
	}
	return itemServiceFor(cfg, restoreCommand(cmds), brokers, p, log)
}

// restoreCommand is the declared command the item service answers
// besides takedowns: the first of type item.restore, or nil.
func restoreCommand(cmds *takedown.Commands) *takedown.Command {
	for _, c := range cmds.List() {
		if c.Type == producers.TypeItemRestore {
			return c
		}
	}
	return nil
}

// itemServiceFor builds the simulated item service, answering restores
// (if not nil) too.
func itemServiceFor(cfg config.Config, restores *takedown.Command, brokers []string, p *producers.Producer, log *slog.Logger) (*itemsvc.Service, error) {
	var restoreTopic, restoreEvents string
	if restores != nil {
		restoreTopic, restoreEvents = restores.Topic, restores.OutcomeTopic
	}
	commands, events := cfg.TakedownTopics()
	return itemsvc.New(itemsvc.Config{
		Brokers:            brokers,
		Conn:               cfg.KafkaConn(),
		CommandsTopic:      commands,
		EventsTopic:        events,
		RestoreTopic:       restoreTopic,
		RestoreEventsTopic: restoreEvents,
		Latency:            cfg.ItemSvc.Latency,
		Decode:             decodeCommand,
		SessionTimeout:     cfg.Kafka.SessionTimeout,
		HeartbeatInterval:  cfg.Kafka.HeartbeatInterval,
		RebalanceTimeout:   cfg.Kafka.RebalanceTimeout,
	}, p, log) // itemsvc.New adds component=itemsvc
}

// decodeCommand is the item service's decoder: consumers.Decode, which
// checks a record as the hub's consumer does, read as an itemsvc.Command.
func decodeCommand(m kafka.Message) (itemsvc.Command, error) {
	ev, err := consumers.Decode(m)
	if err != nil {
		return itemsvc.Command{}, err
	}
	tp, ts := consumers.TraceContext(ev)
	return itemsvc.Command{ID: ev.ID, Source: ev.Source, Type: ev.Type, Subject: ev.Subject, CorrelationID: ev.CorrelationID,
		TraceParent: tp, TraceState: ts, JSON: ev.JSON, ItemID: consumers.DataItemID(ev)}, nil
}
