package restore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// Archiving returns the archive_command a restored directory will run
// when started, or "" when archiving is off. A copy started beside the
// original with the original's archive_command would push its WAL, on a
// new timeline, into the original's archive, where later point-in-time
// restores following the latest timeline would find it. Only the data
// directory's postgresql.conf and postgresql.auto.conf are read, as the
// server reads them, the later setting winning; include directives are
// not followed.
func Archiving(dataDir string) (string, error) {
	settings := map[string]string{}
	for _, name := range []string{"postgresql.conf", "postgresql.auto.conf"} {
		data, err := os.ReadFile(filepath.Join(dataDir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := confLine(line)
			if ok && (k == "archive_mode" || k == "archive_command" || k == "archive_library") {
				settings[k] = v
			}
		}
	}
	switch strings.ToLower(settings["archive_mode"]) {
	case "on", "always", "true", "yes", "1":
	default:
		return "", nil
	}
	if c := settings["archive_command"]; c != "" {
		return c, nil
	}
	return settings["archive_library"], nil
}

// confLine parses "name = value # comment" (the = is optional), with a
// single-quoted value unquoted.
func confLine(line string) (key, value string, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", "", false
	}
	i := strings.IndexAny(line, " \t=")
	if i <= 0 {
		return "", "", false
	}
	key = strings.ToLower(line[:i])
	rest := strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimLeft(strings.TrimPrefix(rest, "="), " \t")
	if strings.HasPrefix(rest, "'") {
		var b strings.Builder
		for j := 1; j < len(rest); j++ {
			switch {
			case rest[j] == '\'' && j+1 < len(rest) && rest[j+1] == '\'':
				b.WriteByte('\'')
				j++
			case rest[j] == '\\' && j+1 < len(rest):
				b.WriteByte(rest[j+1])
				j++
			case rest[j] == '\'':
				return key, b.String(), true
			default:
				b.WriteByte(rest[j])
			}
		}
		return "", "", false // unterminated
	}
	if c := strings.IndexByte(rest, '#'); c >= 0 {
		rest = rest[:c]
	}
	return key, strings.TrimSpace(rest), true
}
