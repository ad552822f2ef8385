package sender

import (
	"testing"

	"golang.org/x/time/rate"
)

func TestReview3SlowDownEveryReply(t *testing.T) {
	slow := Reply{Code: 421, Enhanced: "4.7.0"}
	policy := Reply{Code: 450, Enhanced: "4.7.1"}
	ok := Reply{Code: 250}
	cases := map[string]struct {
		d    Delivery
		want bool
	}{
		"mail 421":       {Delivery{Mail: slow, Rcpt: []Reply{ok}}, true},
		"data 4.7.1":     {Delivery{Mail: ok, Rcpt: []Reply{ok}, Data: policy}, true},
		"rcpt[0] 4.7.1":  {Delivery{Mail: ok, Rcpt: []Reply{policy}}, true},
		"rcpt[2] 421":    {Delivery{Mail: ok, Rcpt: []Reply{ok, ok, slow}}, true},
		"no rcpt":        {Delivery{Mail: ok}, false},
		"5.7.1 not slow": {Delivery{Mail: ok, Rcpt: []Reply{{Code: 550, Enhanced: "5.7.1"}}}, false},
		"450 4.2.0":      {Delivery{Mail: ok, Rcpt: []Reply{{Code: 450, Enhanced: "4.2.0"}}}, false},
	}
	for name, c := range cases {
		l := rate.NewLimiter(rate.Inf, 1)
		p := NewPool(PoolConfig{Workers: 3, Limiter: l, Logf: func(string, ...any) {}})
		p.maybeSlowDown(c.d)
		if got := l.Limit() != rate.Inf; got != c.want {
			t.Errorf("%s: slowed %v, want %v", name, got, c.want)
		}
		if c.want {
			p.maybeSlowDown(c.d) // within a second: no second step
			if l.Limit() != 3 {
				t.Errorf("%s: limit %v after two within a second, want 3", name, l.Limit())
			}
			p.slowMu.Lock() // not left locked
			p.slowMu.Unlock()
		}
	}
}
