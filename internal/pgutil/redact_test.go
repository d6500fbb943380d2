package pgutil_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/duplexsync/duplex/internal/pgutil"
)

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://root:pw@127.0.0.1:5432/db_a":                    "postgres://root:xxxxx@127.0.0.1:5432/db_a",
		"postgresql://root@127.0.0.1/db?sslmode=disable":            "postgresql://root@127.0.0.1/db?sslmode=disable",
		"postgres://root@h/db?password=pw&sslmode=disable":          "postgres://root@h/db?password=xxxxx&sslmode=disable",
		"redis://:pw@127.0.0.1:6379/0":                              "redis://:xxxxx@127.0.0.1:6379/0",
		"host=h user=root password=pw dbname=d":                     "host=h user=root password=xxxxx dbname=d",
		"host=h password='p w\\'x' dbname=d":                        "host=h password=xxxxx dbname=d",
		"host=h PASSWORD = pw dbname=d":                             "host=h PASSWORD = xxxxx dbname=d",
		"host=h user=root dbname=d":                                 "host=h user=root dbname=d",
		"postgres://root:pw@127.0.0.1:5432/db_a?application_name=x": "postgres://root:xxxxx@127.0.0.1:5432/db_a?application_name=x",
	} {
		require.Equal(t, want, pgutil.RedactDSN(in), in)
	}
}
