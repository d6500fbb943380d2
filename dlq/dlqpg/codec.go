package dlqpg

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/duplexsync/duplex"
	"github.com/duplexsync/duplex/dlq"
	"github.com/duplexsync/duplex/internal/valuecodec"
)

// The payload codec stores a duplex.Change (and a duplex.ConflictInfo) as
// jsonb without losing the Go types of its values: an envelope object whose
// values (key columns, before and after images, commit time, conflict
// rows) are in the typed format of internal/valuecodec. The envelope's own
// strings (change ID, position, ...) are plain JSON strings, or
// {"b64":"..."} when jsonb cannot hold them exactly (valuecodec.Clean).

// clean reports whether s can be stored as a jsonb or text string exactly.
func clean(s string) bool { return valuecodec.Clean(s) }

// jstr is a string of the envelope: a JSON string, or {"b64":"..."} when
// jsonb cannot hold it exactly.
type jstr string

func (s jstr) MarshalJSON() ([]byte, error) {
	if clean(string(s)) {
		return json.Marshal(string(s))
	}
	return json.Marshal(map[string]string{"b64": base64.StdEncoding.EncodeToString([]byte(s))})
}

func (s *jstr) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var x string
		err := json.Unmarshal(b, &x)
		*s = jstr(x)
		return err
	}
	var o struct {
		B64 string `json:"b64"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	x, err := base64.StdEncoding.DecodeString(o.B64)
	*s = jstr(x)
	return err
}

func jstrs(ss []string) []jstr {
	if ss == nil {
		return nil
	}
	out := make([]jstr, len(ss))
	for i, s := range ss {
		out[i] = jstr(s)
	}
	return out
}

func strs(js []jstr) []string {
	if js == nil {
		return nil
	}
	out := make([]string, len(js))
	for i, s := range js {
		out[i] = string(s)
	}
	return out
}

// enumDoc stores a duplex.Op or duplex.ConflictKind by name when it has
// one, else by number.
type enumDoc[T interface {
	~uint8
	String() string
}] struct{ v T }

// MarshalJSON writes the enum by name when the name reads back as the same
// value, else by number.
func (e enumDoc[T]) MarshalJSON() ([]byte, error) {
	// By name only when the name reads back as the same value.
	var back T
	if u, ok := any(&back).(textUnmarshaler); ok && u.UnmarshalText([]byte(e.v.String())) == nil && back == e.v {
		return json.Marshal(e.v.String())
	}
	return json.Marshal(uint8(e.v))
}

type textUnmarshaler interface{ UnmarshalText([]byte) error }

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *enumDoc[T]) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		u, ok := any(&e.v).(textUnmarshaler)
		if !ok {
			return fmt.Errorf("%T has no names", e.v)
		}
		return u.UnmarshalText([]byte(s))
	}
	var n uint8
	err := json.Unmarshal(b, &n)
	e.v = T(n)
	return err
}

// columnDoc is a key column.
type columnDoc struct {
	Name  jstr            `json:"name"`
	Value json.RawMessage `json:"value"`
}

type tableDoc struct {
	Schema jstr `json:"schema"`
	Name   jstr `json:"name"`
}

// changeDoc is the payload: a duplex.Change.
type changeDoc struct {
	ID         jstr               `json:"id"`
	Source     jstr               `json:"source"`
	Table      tableDoc           `json:"table"`
	Key        []columnDoc        `json:"key"`
	Op         enumDoc[duplex.Op] `json:"op"`
	Before     json.RawMessage    `json:"before"`
	After      json.RawMessage    `json:"after"`
	Unchanged  []jstr             `json:"unchanged"`
	CommitTime json.RawMessage    `json:"commit_time"`
	Position   jstr               `json:"position"`
	Origin     jstr               `json:"origin"`
}

// conflictDoc is the conflict column: a duplex.ConflictInfo.
type conflictDoc struct {
	Kind      enumDoc[duplex.ConflictKind] `json:"kind"`
	Fields    []jstr                       `json:"fields"`
	Source    json.RawMessage              `json:"source"`
	Target    json.RawMessage              `json:"target"`
	DecidedBy jstr                         `json:"decided_by"`
	Base      json.RawMessage              `json:"base,omitempty"`
	Merge     bool                         `json:"merge,omitempty"`
	Unique    *uniqueDoc                   `json:"unique,omitempty"`
}

// uniqueDoc is a duplex.UniqueInfo.
type uniqueDoc struct {
	Constraint jstr            `json:"constraint"`
	Columns    []jstr          `json:"columns,omitempty"`
	Values     json.RawMessage `json:"values"`
	Detail     jstr            `json:"detail,omitempty"`
	HolderKey  []columnDoc     `json:"holder_key,omitempty"`
}

// versionDoc is one element of the history column: a dlq.Version.
type versionDoc struct {
	At       json.RawMessage `json:"at"`
	From     jstr            `json:"from"`
	To       jstr            `json:"to"`
	ChangeID jstr            `json:"change_id"`
	Source   json.RawMessage `json:"source"`
	Target   json.RawMessage `json:"target"`
}

func encodeChange(c *duplex.Change) ([]byte, error) {
	d := changeDoc{
		ID:        jstr(c.ID),
		Source:    jstr(c.Source),
		Table:     tableDoc{Schema: jstr(c.Table.Schema), Name: jstr(c.Table.Name)},
		Op:        enumDoc[duplex.Op]{c.Op},
		Unchanged: jstrs(c.Unchanged),
		Position:  jstr(c.Position),
		Origin:    jstr(c.Origin),
	}
	var err error
	if d.Key, err = encodeKey(c.Key); err != nil {
		return nil, err
	}
	if d.Before, err = valuecodec.MarshalValue(c.Before); err != nil {
		return nil, err
	}
	if d.After, err = valuecodec.MarshalValue(c.After); err != nil {
		return nil, err
	}
	if d.CommitTime, err = valuecodec.MarshalValue(c.CommitTime); err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

func decodeChange(b []byte) (duplex.Change, error) {
	var d changeDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return duplex.Change{}, fmt.Errorf("dlqpg: decode payload: %w", err)
	}
	c := duplex.Change{
		ID:        string(d.ID),
		Source:    string(d.Source),
		Table:     duplex.Table{Schema: string(d.Table.Schema), Name: string(d.Table.Name)},
		Op:        d.Op.v,
		Unchanged: strs(d.Unchanged),
		Position:  duplex.Position(d.Position),
		Origin:    string(d.Origin),
	}
	var err error
	if c.Key, err = decodeKey(d.Key); err != nil {
		return duplex.Change{}, err
	}
	if c.Before, err = decodeValues(d.Before, "before"); err != nil {
		return duplex.Change{}, err
	}
	if c.After, err = decodeValues(d.After, "after"); err != nil {
		return duplex.Change{}, err
	}
	ct, err := valuecodec.UnmarshalValue(d.CommitTime)
	if err != nil {
		return duplex.Change{}, fmt.Errorf("dlqpg: commit time: %w", err)
	}
	switch t := ct.(type) {
	case time.Time:
		c.CommitTime = t
	case nil:
	default:
		return duplex.Change{}, fmt.Errorf("dlqpg: commit time is a %T", ct)
	}
	return c, nil
}

func encodeKey(k duplex.Key) ([]columnDoc, error) {
	if k == nil {
		return nil, nil
	}
	out := make([]columnDoc, len(k))
	for i, col := range k {
		out[i].Name = jstr(col.Name)
		var err error
		if out[i].Value, err = valuecodec.MarshalValue(col.Value); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeKey(docs []columnDoc) (duplex.Key, error) {
	if docs == nil {
		return nil, nil
	}
	k := make(duplex.Key, len(docs))
	for i, col := range docs {
		v, err := valuecodec.UnmarshalValue(col.Value)
		if err != nil {
			return nil, fmt.Errorf("dlqpg: key column %q: %w", col.Name, err)
		}
		k[i] = duplex.Column{Name: string(col.Name), Value: v}
	}
	return k, nil
}

func decodeValues(b []byte, what string) (duplex.Values, error) {
	v, err := valuecodec.UnmarshalValues(b)
	if err != nil {
		return nil, fmt.Errorf("dlqpg: %s: %w", what, err)
	}
	return v, nil
}

func encodeConflict(ci *duplex.ConflictInfo) ([]byte, error) {
	if ci == nil {
		return nil, nil
	}
	d := conflictDoc{
		Kind:      enumDoc[duplex.ConflictKind]{ci.Kind},
		Fields:    jstrs(ci.Fields),
		DecidedBy: jstr(ci.DecidedBy),
	}
	var err error
	if d.Source, err = valuecodec.MarshalValue(ci.Source); err != nil {
		return nil, err
	}
	if d.Target, err = valuecodec.MarshalValue(ci.Target); err != nil {
		return nil, err
	}
	if ci.Base != nil {
		if d.Base, err = valuecodec.MarshalValue(ci.Base); err != nil {
			return nil, err
		}
	}
	d.Merge = ci.Merge
	if u := ci.Unique; u != nil {
		ud := &uniqueDoc{Constraint: jstr(u.Constraint), Columns: jstrs(u.Columns), Detail: jstr(u.Detail)}
		if ud.Values, err = valuecodec.MarshalValue(u.Values); err != nil {
			return nil, err
		}
		if ud.HolderKey, err = encodeKey(u.HolderKey); err != nil {
			return nil, err
		}
		d.Unique = ud
	}
	return json.Marshal(d)
}

// addHistory returns the stored history (nil: none) with the versions
// added, ordered by time and bounded to dlq.HistoryLimit as dlq.Absorb
// keeps it. The stored versions' rows are kept as stored, never decoded:
// a held row changed many times costs a put the same whatever its
// history.
func addHistory(stored []byte, added []dlq.Version) ([]byte, error) {
	if len(added) == 0 {
		return stored, nil
	}
	var docs []versionDoc
	if stored != nil {
		if err := json.Unmarshal(stored, &docs); err != nil {
			return nil, fmt.Errorf("dlqpg: decode history: %w", err)
		}
	}
	type timed struct {
		at  time.Time
		doc versionDoc
	}
	all := make([]timed, 0, len(docs)+len(added))
	for _, d := range docs {
		at, err := valuecodec.UnmarshalValue(d.At)
		if err != nil {
			return nil, fmt.Errorf("dlqpg: history time: %w", err)
		}
		t, _ := at.(time.Time)
		all = append(all, timed{t, d})
	}
	for _, v := range added {
		d := versionDoc{From: jstr(v.Direction.From), To: jstr(v.Direction.To), ChangeID: jstr(v.ChangeID)}
		var err error
		if d.At, err = valuecodec.MarshalValue(v.At); err != nil {
			return nil, err
		}
		if d.Source, err = valuecodec.MarshalValue(v.Source); err != nil {
			return nil, err
		}
		if d.Target, err = valuecodec.MarshalValue(v.Target); err != nil {
			return nil, err
		}
		all = append(all, timed{v.At, d})
	}
	slices.SortStableFunc(all, func(a, b timed) int { return a.at.Compare(b.at) })
	if len(all) > dlq.HistoryLimit {
		all = all[len(all)-dlq.HistoryLimit:]
	}
	docs = make([]versionDoc, len(all))
	for i, t := range all {
		docs[i] = t.doc
	}
	return json.Marshal(docs)
}

func decodeHistory(b []byte) ([]dlq.Version, error) {
	if b == nil {
		return nil, nil
	}
	var docs []versionDoc
	if err := json.Unmarshal(b, &docs); err != nil {
		return nil, fmt.Errorf("dlqpg: decode history: %w", err)
	}
	out := make([]dlq.Version, len(docs))
	for i, d := range docs {
		v := dlq.Version{Direction: duplex.Direction{From: string(d.From), To: string(d.To)}, ChangeID: string(d.ChangeID)}
		at, err := valuecodec.UnmarshalValue(d.At)
		if err != nil {
			return nil, fmt.Errorf("dlqpg: history time: %w", err)
		}
		v.At, _ = at.(time.Time)
		if v.Source, err = decodeValues(d.Source, "history source"); err != nil {
			return nil, err
		}
		if v.Target, err = decodeValues(d.Target, "history target"); err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func decodeConflict(b []byte) (*duplex.ConflictInfo, error) {
	if b == nil {
		return nil, nil
	}
	var d conflictDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dlqpg: decode conflict: %w", err)
	}
	ci := &duplex.ConflictInfo{Kind: d.Kind.v, Fields: strs(d.Fields), DecidedBy: string(d.DecidedBy), Merge: d.Merge}
	var err error
	if ci.Source, err = decodeValues(d.Source, "conflict source"); err != nil {
		return nil, err
	}
	if ci.Target, err = decodeValues(d.Target, "conflict target"); err != nil {
		return nil, err
	}
	if d.Base != nil {
		if ci.Base, err = decodeValues(d.Base, "conflict base"); err != nil {
			return nil, err
		}
	}
	if ud := d.Unique; ud != nil {
		u := &duplex.UniqueInfo{Constraint: string(ud.Constraint), Columns: strs(ud.Columns), Detail: string(ud.Detail)}
		if u.Values, err = decodeValues(ud.Values, "unique values"); err != nil {
			return nil, err
		}
		if u.HolderKey, err = decodeKey(ud.HolderKey); err != nil {
			return nil, err
		}
		ci.Unique = u
	}
	return ci, nil
}

var errNilLetter = errors.New("dlqpg: Put of a nil dead letter")
