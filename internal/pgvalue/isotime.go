package pgvalue

import "time"

// parseISO parses the text form PostgreSQL gives a date, timestamp or
// timestamptz under DateStyle ISO when it is the common one: a four-digit
// year AD, "YYYY-MM-DD" for a date; then " HH:MM:SS", up to six digits of
// fraction and, with zone, an offset "+HH", "+HH:MM" or "+HH:MM:SS". It
// returns the instant in UTC and whether b had that shape; anything else
// (BC years, five-digit years, infinity) is left to pgtype.
func parseISO(b []byte, date, zone bool) (time.Time, bool) {
	if len(b) < 10 || b[4] != '-' || b[7] != '-' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	if !ok1 || !ok2 || !ok3 || year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return time.Time{}, false
	}
	if date {
		if len(b) != 10 {
			return time.Time{}, false
		}
		return time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC), true
	}
	if len(b) < 19 || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	hour, ok1 := digits(b[11:13])
	minute, ok2 := digits(b[14:16])
	sec, ok3 := digits(b[17:19])
	if !ok1 || !ok2 || !ok3 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	rest := b[19:]
	nsec := 0
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && n <= 6 && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return time.Time{}, false
		}
		frac, _ := digits(rest[1:n])
		for i := n; i <= 9; i++ {
			frac *= 10
		}
		nsec, rest = frac, rest[n:]
	}
	offset := 0
	if zone {
		var ok bool
		if offset, ok = parseOffset(rest); !ok {
			return time.Time{}, false
		}
	} else if len(rest) != 0 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), true
}

// parseOffset parses "+HH", "+HH:MM" or "+HH:MM:SS" (or "-") into seconds
// east of UTC.
func parseOffset(b []byte) (int, bool) {
	if len(b) != 3 && len(b) != 6 && len(b) != 9 || b[0] != '+' && b[0] != '-' {
		return 0, false
	}
	secs := 0
	for i, unit := 1, 3600; i < len(b); i, unit = i+3, unit/60 {
		if i > 1 && b[i-1] != ':' {
			return 0, false
		}
		n, ok := digits(b[i : i+2])
		if !ok || i > 1 && n > 59 {
			return 0, false
		}
		secs += n * unit
	}
	if b[0] == '-' {
		secs = -secs
	}
	return secs, true
}

// digits parses b, ASCII digits only.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// daysIn returns the number of days of month in year (proleptic
// Gregorian, as PostgreSQL counts).
func daysIn(year, month int) int {
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		return 29
	}
	return int(monthDays[month-1])
}

var monthDays = [12]uint8{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
