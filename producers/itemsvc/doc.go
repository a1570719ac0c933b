// Package itemsvc is the simulated item service of SPEC §6: it reads
// takedown.requested commands from Kafka with its own consumer group and
// answers each with item.removed per container, then takedown.confirmed,
// or takedown.rejected. With Config.RestoreTopic set it answers the demo
// restores command of SPEC §5.1 too: item.restore, answered by
// item.restored or item.restore_rejected. It knows nothing of the hub: the
// node injects the CloudEvents decoder and a producers.Publisher.
package itemsvc
