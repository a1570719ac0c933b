package kafkaconn

import "strings"

// Brokers returns the bootstrap addresses of list with surrounding spaces
// trimmed and empty entries dropped: how every Kafka client of Switchboard
// reads its broker list. None left is the caller's error to name.
func Brokers(list []string) []string {
	var out []string
	for _, b := range list {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}
