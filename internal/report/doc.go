// Package report keeps the durable record of what happened to every row of a
// bulk send and turns it into a result file.
//
// Two things live here:
//
//   - The [Journal], an append-only JSON-lines file. It is the only state a
//     resumed run trusts: a row whose last record is an outcome with a final
//     status is never sent again, and a row whose last record says the final
//     dot was about to go out comes back as [InDoubt] rather than being
//     resent. Each record is written before the call returns; what must
//     survive a restart of the machine is fsynced too: every commit, or, on
//     a machine with boot ids, the reservation of each batch of rows (see
//     [Journal.Reserve]), after which a restart leaves every reserved row
//     without a later record in doubt. Many workers write to it at once;
//     their records share one write and one fsync (group commit). An
//     exclusive flock keeps two overlapping runs from sharing a journal.
//
//   - The [Result], a spreadsheet (XLSX, streamed) or CSV with one line per
//     list row: the fixed outcome columns, then the list's own columns. It is
//     written to a temporary file and renamed into place on Close, so an older
//     result file is never truncated. Nothing written to it can become a
//     formula: values from the list and reply texts from servers are both
//     attacker-controlled.
//
// The package knows nothing of SMTP beyond the [Outcome] value, and nothing
// of templates or list formats.
package report
