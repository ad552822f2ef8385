package sender

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Auth holds credentials. Password and Token are never written to a trace,
// a log or an error.
type Auth struct {
	Username string
	Password string
	// Token is an OAuth 2.0 bearer token for XOAUTH2.
	Token string
	// Mechanism forces PLAIN, LOGIN, CRAM-MD5 or XOAUTH2; "" picks the
	// first the server offers of XOAUTH2 (when Token is set), PLAIN,
	// LOGIN, CRAM-MD5.
	Mechanism string
}

// AuthError is a refused authentication (535 and the like). It ends the
// run: every message would fail the same way.
type AuthError struct {
	Mechanism string
	Reply     Reply
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("sender: AUTH %s refused: %s", e.Mechanism, e.Reply)
}

// ErrAuthUnavailable means credentials were given and the server offers
// no mechanism to use them: a setup error, not worth a retry.
var ErrAuthUnavailable = errors.New("sender: cannot authenticate")

// ErrAuthInsecure refuses to send credentials in plain text to another
// machine.
var ErrAuthInsecure = errors.New("sender: refusing to send credentials without TLS to a host that is not loopback")

func (c *Client) authenticate(a *Auth) error {
	if !c.isTLS && !isLoopback(c.host) {
		return ErrAuthInsecure
	}
	offered := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	mech := strings.ToUpper(a.Mechanism)
	if mech == "" {
		prefs := []string{"PLAIN", "LOGIN", "CRAM-MD5"}
		if a.Token != "" {
			prefs = []string{"XOAUTH2"}
		}
		for _, p := range prefs {
			if contains(offered, p) {
				mech = p
				break
			}
		}
		if mech == "" {
			if len(offered) == 0 {
				return fmt.Errorf("%w: the server does not offer AUTH (remove the user name from --smtp, or use the relay's submission port)", ErrAuthUnavailable)
			}
			return fmt.Errorf("%w: the server offers AUTH %s, none of which bulkmail can use with the credentials given", ErrAuthUnavailable, c.ext["AUTH"])
		}
	}
	c.redacting = true
	defer func() { c.redacting = false }()
	t := c.cfg.Timeouts.Command
	enc := base64.StdEncoding.EncodeToString
	var (
		r   Reply
		err error
	)
	switch mech {
	case "PLAIN":
		r, err = c.cmd(t, "AUTH", "AUTH PLAIN %s", enc([]byte("\x00"+a.Username+"\x00"+a.Password)))
	case "LOGIN":
		r, err = c.cmd(t, "AUTH", "AUTH LOGIN")
		for _, s := range []string{a.Username, a.Password} {
			if err != nil || r.Code != 334 {
				break
			}
			r, err = c.cmd(t, "AUTH", "%s", enc([]byte(s)))
		}
	case "CRAM-MD5":
		r, err = c.cmd(t, "AUTH", "AUTH CRAM-MD5")
		if err == nil && r.Code == 334 {
			challenge, derr := base64.StdEncoding.DecodeString(r.Text)
			if derr != nil {
				return c.fail("AUTH CRAM-MD5", fmt.Errorf("%w: challenge is not base64", ErrMalformedReply))
			}
			mac := hmac.New(md5.New, []byte(a.Password))
			mac.Write(challenge)
			r, err = c.cmd(t, "AUTH", "%s", enc([]byte(a.Username+" "+hex.EncodeToString(mac.Sum(nil)))))
		}
	case "XOAUTH2":
		r, err = c.cmd(t, "AUTH", "AUTH XOAUTH2 %s", enc([]byte("user="+a.Username+"\x01auth=Bearer "+a.Token+"\x01\x01")))
		if err == nil && r.Code == 334 {
			// The server explains the failure in the 334; an empty line
			// gets the final refusal.
			r, err = c.cmd(t, "AUTH", "")
		}
	default:
		return fmt.Errorf("sender: unknown AUTH mechanism %q", mech)
	}
	var re *ReplyError
	if errors.As(err, &re) && re.Reply.Permanent() {
		return &AuthError{Mechanism: mech, Reply: re.Reply}
	}
	if errors.As(err, &re) {
		// A 454 (RFC 4954: temporary failure) or a 421: this connection
		// cannot go on, another may.
		c.broken = err
		return err
	}
	if err != nil {
		return err
	}
	if r.Code != 235 {
		return c.fail("AUTH "+mech, fmt.Errorf("%w: %s", ErrUnexpectedReply, r))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
