package producers

// The event types of the contract (SPEC §1). Every package that names one
// uses these constants.
const (
	// TypeItemReported is a user's report of an item.
	TypeItemReported = "item.reported"
	// TypeTakedownRequested is the takedown command the hub publishes.
	TypeTakedownRequested = "takedown.requested"
	// TypeItemRemoved is emitted once per container an item is removed from.
	TypeItemRemoved = "item.removed"
	// TypeTakedownConfirmed is emitted once the item is gone from every
	// container.
	TypeTakedownConfirmed = "takedown.confirmed"
	// TypeTakedownRejected is emitted when a takedown cannot be done.
	TypeTakedownRejected = "takedown.rejected"
	// TypeItemRestore is the demo restores command (SPEC §5.1): put an
	// item back where it was posted.
	TypeItemRestore = "item.restore"
	// TypeItemRestored answers an item.restore that was done.
	TypeItemRestored = "item.restored"
	// TypeItemRestoreRejected answers an item.restore that cannot be done.
	TypeItemRestoreRejected = "item.restore_rejected"
)

// The default topics (kafka.topics, kafka.dlq). Every package that needs a default
// topic uses these constants.
const (
	// DefaultReportsTopic carries item.reported.
	DefaultReportsTopic = "items.reported"
	// DefaultCommandsTopic carries takedown.requested.
	DefaultCommandsTopic = "takedown.commands"
	// DefaultEventsTopic carries item.removed, takedown.confirmed and
	// takedown.rejected.
	DefaultEventsTopic = "takedown.events"
	// DefaultDLQTopic receives the records that are not valid CloudEvents.
	DefaultDLQTopic = "switchboard.dlq"
	// DemoItemCommandsTopic carries the demo restores command's
	// item.restore.
	DemoItemCommandsTopic = "item.commands"
	// DemoItemEventsTopic carries item.restored and item.restore_rejected.
	DemoItemEventsTopic = "item.events"
)

// ItemServiceSource is the CloudEvents source of the item service's
// events, which the sync adapter trusts by default.
const ItemServiceSource = "/switchboard/itemsvc"

// The types of the demo's item posts (SPEC §2.1's example of any other
// domain topic), and their topic.
const (
	// TypeItemPosted is an item posted to a group or its author's feed.
	TypeItemPosted = "item.posted"
	// TypeItemUpdated is a change to a posted item.
	TypeItemUpdated = "item.updated"
	// DemoPostsTopic carries item.posted and item.updated.
	DemoPostsTopic = "items.posted"
)
