//go:build !linux

package takedown

import "net"

// watchHangup is not available here: a held request's hang-up is seen
// when its answer is written, and its wait is bounded by its deadline.
func watchHangup(net.Conn, func()) (stop func(), ok bool) { return nil, false }
