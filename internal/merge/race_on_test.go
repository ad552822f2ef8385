//go:build race

package merge

// raceEnabled: the race detector slows the byte scanners about tenfold,
// so the tests that read tens of megabytes of XML run without it only.
const raceEnabled = true
