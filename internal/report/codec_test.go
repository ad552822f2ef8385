package report

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// codecStrings are the strings json escapes in every way it can, for the
// fields of a record.
var codecStrings = []string{
	"",
	"plain",
	`quote " and backslash \ and slash /`,
	"<user@example.org> & more",
	"line\nbreak\r\ttab\b\f",
	"\x00\x01\x1f\x7f",
	"Zoë Müller 日本 😀",
	"sep\u2028par\u2029",
	"bad \xff utf-8 \xc3",
	"\xed\xa0\x80", // an encoded surrogate: invalid UTF-8
	"\ufffd",
	strings.Repeat("long ", 300),
}

var codecTimes = []time.Time{
	{},
	time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC),
	time.Date(2026, 11, 25, 9, 0, 0, 123456789, time.UTC),
	time.Date(2026, 11, 25, 9, 0, 0, 120000000, time.UTC),
	time.Date(2026, 11, 25, 9, 0, 0, 5, time.FixedZone("", 5*3600+30*60)),
	time.Date(2026, 11, 25, 9, 0, 0, 0, time.FixedZone("", -8*3600)),
	time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
	time.Now().UTC(),
}

func codecRecords() []record {
	recs := []record{
		{},
		{T: kindRun, Version: journalVersion, List: listA, Start: time.Now().UTC()},
		{T: kindCommit, Row: 2, Email: "a@example.org", Attempt: 1, MessageID: "<1.2@example.com>", At: time.Now().UTC()},
		{T: kindOutcome, Row: 3, Email: "b@example.org", Status: Delivered,
			Rcpt: Reply{Code: 250, Enhanced: "2.1.5", Text: "Ok"}, Data: Reply{Code: 250, Enhanced: "2.0.0", Text: "queued as X"},
			Attempts: 2, MessageID: "<3@x>", Conn: 7, Start: time.Now().UTC(), Duration: 3_000_000},
		{T: kindOutcome, Row: 4, Status: Failed, Rcpt: Reply{Text: "only text"}, Data: Reply{Enhanced: "4.7.0"}, Error: "dial: refused"},
		{T: kindOutcome, Row: 5, Status: Rejected, Rcpt: Reply{Code: 550}, Duration: -1, Conn: -3},
		{T: "x", Row: 1 << 40, Version: -7, Attempt: 1<<31 - 1, Attempts: -(1 << 62)},
	}
	for i, s := range codecStrings {
		recs = append(recs,
			record{T: s, List: s, Email: s, Status: Status(s), MessageID: s, Error: s, Row: i},
			record{T: kindOutcome, Rcpt: Reply{Code: i, Enhanced: s, Text: s}, Data: Reply{Text: s}})
	}
	for _, tm := range codecTimes {
		recs = append(recs, record{T: kindOutcome, Start: tm, At: tm})
	}
	return recs
}

func TestAppendRecordIsJSONMarshal(t *testing.T) {
	for i, r := range codecRecords() {
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("record %d: json.Marshal: %v", i, err)
		}
		got, err := appendRecord([]byte("prefix"), &r)
		if err != nil {
			t.Fatalf("record %d: appendRecord: %v", i, err)
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("record %d:\ngot  %s\nwant prefix%s", i, got, want)
		}
	}
}

func TestAppendRecordTimeOutOfRange(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
	} {
		r := record{T: kindOutcome, Row: 2, At: tm}
		_, jerr := json.Marshal(&r)
		got, err := appendRecord([]byte("keep"), &r)
		if jerr == nil || err == nil || err.Error() != jerr.Error() {
			t.Errorf("%v: got error %v, want %v", tm, err, jerr)
		}
		if string(got) != "keep" {
			t.Errorf("%v: got %q on error, want dst unchanged", tm, got)
		}
	}
}

// checkFast fails unless line, which json.Marshal wrote, is read without
// falling back to json.Unmarshal.
func checkFast(t *testing.T, line []byte) {
	t.Helper()
	var r record
	d := recordDecoder{buf: line}
	if !d.record(&r) {
		t.Errorf("%q: left to json.Unmarshal, want it read by decodeRecord itself", line)
	}
}

// checkDecode compares decodeRecord with json.Unmarshal on line.
func checkDecode(t *testing.T, line []byte) {
	t.Helper()
	var want record
	werr := json.Unmarshal(line, &want)
	got := record{T: "stale", Row: 99, Rcpt: Reply{Code: 1}} // decodeRecord must reset it
	gerr := decodeRecord(line, &got)
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: got error %v, want %v", line, gerr, werr)
	}
	if werr != nil {
		if gerr.Error() != werr.Error() {
			t.Errorf("%q: got error %q, want %q", line, gerr, werr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q:\ngot  %#v\nwant %#v", line, got, want)
	}
}

func TestDecodeRecordIsJSONUnmarshal(t *testing.T) {
	for _, r := range codecRecords() {
		line, err := appendRecord(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		checkDecode(t, append(line, '\n'))
		checkDecode(t, line)
		checkFast(t, append(line, '\n'))
	}
	// Lines json.Marshal never writes: each must decode (or fail) as json
	// decodes it.
	for _, line := range []string{
		``, `{`, `}`, `{}`, `[]`, `null`, ` {"t":"run"}`, `{"t":"run"} x`, `{"t":"run"}{}`,
		`{"t":"run"}` + "\r\n\t ",
		`{"t":"run","t":"commit"}`,
		`{"row":2,"t":"commit"}`,
		`{"T":"run"}`,
		`{"t":"run","zzz":[1,2,{"a":null}]}`,
		`{"t":null}`, `{"t":1}`, `{"row":"2"}`, `{"row":2.0}`, `{"row":2e1}`, `{"row":02}`, `{"row":-0}`, `{"row":+2}`,
		`{"row":99999999999999999999}`, `{"dur_ns":-9223372036854775808}`, `{"dur_ns":9223372036854775808}`,
		`{"t":"a\u0041\u00e9\u2028\/"}`, `{"t":"\ud83d\ude00"}`, `{"t":"\ud83d"}`, `{"t":"\ude00x"}`, `{"t":"\u12"}`, `{"t":"\x"}`,
		"{\"t\":\"raw\x01control\"}", "{\"t\":\"bad\xffutf8\"}", "{\"t\":\"del\x7f\"}",
		`{"t":"x\"}`, `{"t":"x`,
		`{"rcpt":{}}`, `{"rcpt":null}`, `{"rcpt":{"text":"a","code":1}}`, `{"rcpt":{"code":1,"code":2}}`, `{"rcpt":{"Code":1}}`,
		`{"rcpt":{"code":250,"enhanced":"2.1.5","text":"ok"},"data":{"text":"q"}}`,
		`{"start":"2026-11-25T09:00:00Z"}`, `{"start":"2026-11-25T09:00:00.5+01:00"}`, `{"start":"2026-11-25 09:00:00Z"}`,
		`{"start":"2026-11-25T09:00:00\u005a"}`, `{"start":null}`, `{"start":""}`, `{"start":"2026-13-25T09:00:00Z"}`,
		`{"at":"2026-11-25T24:00:00Z"}`, `{"at":"10000-01-01T00:00:00Z"}`,
		`{"t":"run","v":1,"list":"x","row":1,"email":"e","status":"delivered","rcpt":{"code":1},"data":{"code":2},"attempt":1,"attempts":2,"mid":"m","error":"e","conn":3,"start":"2026-11-25T09:00:00Z","at":"2026-11-25T09:00:00Z","dur_ns":4}`,
		`{"t":"run" }`, `{"t" :"run"}`, `{ "t":"run"}`, `{"t":"run",}`, `{,"t":"run"}`,
		`{"t":"reserve","reserved":[]}`, `{"t":"reserve","reserved":null}`, `{"t":"reserve","reserved":[{}]}`,
		`{"t":"reserve","reserved":[{"row":1},]}`, `{"t":"reserve","reserved":[{"row":1}{"row":2}]}`,
		`{"t":"reserve","reserved":[{"mid":"m","row":1}]}`, `{"t":"reserve","reserved":[{"row":1,"row":2}]}`,
		`{"t":"reserve","reserved":[{"row":1,"email":"aA"}],"reserved":[{"row":2}]}`,
		`{"t":"reserve","reserved":[{"row":1}]`, `{"t":"reserve","reserved":[{"row":1}] }`, `{"t":"end"}`,
		`{"t":"run","boot":""}`, `{"t":"run","boot":1}`,
	} {
		checkDecode(t, []byte(line))
	}
	// What the journal writes for its own kinds is read fast.
	run, err := json.Marshal(&record{T: kindRun, Version: 1, List: "x", Start: time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC), Boot: "b00t"})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range [][]byte{
		run,
		appendReserve(nil, reservation(1, 2, 3)),
		appendReserve(nil, []Reservation{{Row: 7}, {Row: 8, Email: "<\"q\">@x", MessageID: "<m\u2028@x>"}}),
	} {
		checkDecode(t, line)
		checkFast(t, line)
	}
}

func FuzzCodec(f *testing.F) {
	for _, r := range codecRecords() {
		f.Add(r.T, r.Email, r.MessageID, r.Rcpt.Text, r.Row, r.Rcpt.Code, r.Duration, r.Start.UnixNano(), 0, []byte(nil))
	}
	f.Add("run", "<a@b>&", "\u2028", "x\xff", 3, 250, int64(5), int64(1e18), 3600, []byte(`{"t":"run"}`))
	f.Add("", "", "", "", 0, 0, int64(0), int64(0), -1, []byte(`{"t":"\ud83d\ude00","row":1}`+"\n"))
	f.Fuzz(func(t *testing.T, s1, s2, s3, s4 string, row, code int, dur, nanos int64, zone int, line []byte) {
		var tm time.Time
		switch {
		case zone == -1:
		case zone%86400 == 0:
			tm = time.Unix(0, nanos).UTC()
		default:
			tm = time.Unix(0, nanos).In(time.FixedZone("", zone%86400))
		}
		r := record{T: s1, Version: code, List: s4, Row: row, Email: s2, Status: Status(s3),
			Rcpt: Reply{Code: code, Enhanced: s3, Text: s4}, Data: Reply{Text: s1},
			Attempt: row, Attempts: code, MessageID: s3, Error: s4, Conn: code,
			Start: tm, At: tm, Duration: dur}
		want, werr := json.Marshal(&r)
		got, gerr := appendRecord(nil, &r)
		if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("appendRecord:\ngot  %s, %v\nwant %s, %v", got, gerr, want, werr)
		}
		if werr == nil {
			checkDecode(t, append(got, '\n'))
			checkFast(t, append(got, '\n'))
		}
		checkDecode(t, line)
	})
}

func BenchmarkCodec(b *testing.B) {
	r := record{T: kindOutcome, Row: 12345, Email: "user0012345@example.org", Status: Delivered,
		Rcpt: Reply{Code: 250, Enhanced: "2.1.5", Text: "Ok"}, Data: Reply{Code: 250, Enhanced: "2.0.0", Text: "Ok: queued as 4Zk0012345X"},
		Attempts: 1, MessageID: "<12345.20261125090000@example.com>", Conn: 7, Start: time.Now().UTC(), Duration: 3_000_000}
	line, _ := json.Marshal(&r)
	line = append(line, '\n')
	b.Run("decode/json", func(b *testing.B) {
		for b.Loop() {
			var out record
			if err := json.Unmarshal(line, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/decodeRecord", func(b *testing.B) {
		for b.Loop() {
			var out record
			if err := decodeRecord(line, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/appendRecord", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		for b.Loop() {
			var err error
			if buf, err = appendRecord(buf[:0], &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// checkUTCTime compares utcTime with time.Time's UnmarshalText on s: where
// utcTime takes s, it must give the same time.
func checkUTCTime(t *testing.T, s string) {
	t.Helper()
	var got, want time.Time
	if !utcTime([]byte(s), &got) {
		return
	}
	if err := want.UnmarshalText([]byte(s)); err != nil {
		t.Fatalf("%q: utcTime took it, UnmarshalText: %v", s, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: utcTime %#v, UnmarshalText %#v", s, got, want)
	}
}

func TestUTCTime(t *testing.T) {
	taken := 0
	for _, s := range []string{
		"2026-11-26T03:18:58.711342903Z", "2026-11-26T03:18:58Z", "2026-11-26T03:18:58.7Z", "0000-01-01T00:00:00Z",
		"9999-12-28T23:59:59.999999999Z", "2026-02-28T00:00:00.000000001Z", "2026-11-26T03:18:58.0Z",
		"2026-11-26T03:18:58.7113429031Z", "2026-11-26T03:18:58.Z", "2026-11-26T03:18:58,5Z", "2026-11-26T03:18:58.-5Z",
		"2026-11-26T03:18:58+00:00", "2026-11-26T24:00:00Z", "2026-11-26T23:60:00Z", "2026-11-26T23:00:60Z",
		"2026-13-26T03:18:58Z", "2026-00-26T03:18:58Z", "2026-11-00T03:18:58Z", "2026-11-29T03:18:58Z", "2024-02-29T03:18:58Z",
		"2026-11-26 03:18:58Z", "2026-11-26T3:18:58Z", "-026-11-26T03:18:58Z", "+026-11-26T03:18:58Z", "2026-1a-26T03:18:58Z",
		"2026-11-26T03:18:58.5 Z", "2026-11-26T03:18:58Zz", "Z", "", "2026-11-26T03:18:58.1e5Z",
	} {
		checkUTCTime(t, s)
	}
	for i := range 100000 {
		tm := time.Unix(1_700_000_000+int64(i)*7919, int64(i)*104729%1e9).UTC()
		if i%3 == 0 {
			tm = tm.Truncate(time.Second)
		}
		b, _ := tm.MarshalText()
		checkUTCTime(t, string(b))
		var got time.Time
		if utcTime(b, &got) {
			taken++
		}
	}
	if taken < 80000 {
		t.Errorf("utcTime took %d of 100000 times", taken)
	}
}

func FuzzUTCTime(f *testing.F) {
	f.Add("2026-11-26T03:18:58.711342903Z")
	f.Add("2026-11-26T03:18:58Z")
	f.Fuzz(func(t *testing.T, s string) { checkUTCTime(t, s) })
}
