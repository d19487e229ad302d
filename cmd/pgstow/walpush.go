package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgstow/pgstow/providers"
	"github.com/pgstow/pgstow/repository"
	"github.com/pgstow/pgstow/walarchive"
)

// maxAhead bounds wal-push --ahead and wal-fetch --prefetch: each file
// ahead is a WAL segment staged on local disk (16 MiB by default).
const maxAhead = 256

func newWALPushCmd(g *globals) *cobra.Command {
	var repoURLs []string
	var ahead int
	cmd := &cobra.Command{
		Use:   "wal-push PATH",
		Short: "Archive one WAL file into the repository, or several (for archive_command)",
		Long: `Archive one WAL file: compress it, checksum it and store it in the repository.
Meant for PostgreSQL's archive_command (PostgreSQL runs it from the data directory):

  archive_mode = on
  archive_command = 'pgstow wal-push --repo file:///var/backups/pg %p'

Pushing a file that is already archived with the same content succeeds (PostgreSQL
retries after a crash); a different file under the same name fails and is never
overwritten. Each call also pushes up to --ahead other files that PostgreSQL has
marked ready, in parallel, so a busy server's archiver does not fall behind; its
later calls for those files find them archived.

Give --repo more than once to archive into several repositories (say, one in
another region). The file goes to all of them at once, and the command succeeds
only when every one holds it: if any cannot be reached or refuses the file, it
exits 1 with one line naming each failing repository and why, PostgreSQL keeps the
file and retries it, and the retry finds it already in the healthy ones.
PGSTOW_REPO holds one URL; several repositories are given with --repo only.
One --encryption-key-file serves every encrypted repository; a repository whose
pgstow.json says it is plain is written plain.

A file is never held in memory: it is compressed into a spool file (in
--spool-dir, PGSTOW_SPOOL_DIR, or the system's temporary directory), which is
what the store uploads, and removed at once; with several repositories, one per
repository.`,
		Example: `  pgstow wal-push --repo file:///var/backups/pg pg_wal/000000010000000000000003
  pgstow wal-push --repo file:///var/backups/pg --repo 's3://dr-bucket/pg?region=eu-west-2' %p`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := intRange("ahead", ahead, 0, maxAhead); err != nil {
				return err
			}
			repos, openErr, err := g.openRepos(cmd, repoURLs)
			if err != nil {
				return err
			}
			defer closeRepos(repos)
			var pushErr error
			if len(repos) > 0 {
				// The repositories that opened get the file even when
				// another did not: they are current when the retry
				// comes, and a lost primary loses less.
				pushErr = walarchive.PushAll(cmd.Context(), repos, args[0], walarchive.Options{Ahead: ahead, Log: g.log})
			}
			return walarchive.JoinErrors(openErr, pushErr)
		},
	}
	reposFlag(cmd, &repoURLs)
	cmd.Flags().IntVar(&ahead, "ahead", 8, "other ready WAL files to push in the same call, 0 (off) to 256")
	return cmd
}

// reposFlag adds --repo to a command that writes WAL to one repository or
// several; PGSTOW_REPO (one URL) is its default.
func reposFlag(cmd *cobra.Command, dst *[]string) {
	// StringArray, not StringSlice: a URL may hold a comma.
	cmd.Flags().StringArrayVar(dst, "repo", nil, "repository `URL`, e.g. file:///var/backups/pgstow; repeat it to write to several (env PGSTOW_REPO: one URL)")
	lockFlags(cmd)
}

// openRepos opens every repository urls names (PGSTOW_REPO when --repo is
// not given). err is a refusal of the command line (no repository, a bad
// URL, the same repository twice), returned before anything is opened;
// openErr joins the repositories that could not be opened, each named
// (a *walarchive.RepoError when there are several), so that the caller
// can still write to the others. The caller closes the repositories.
func (g *globals) openRepos(cmd *cobra.Command, urls []string) (repos []*repository.Repository, openErr, err error) {
	urls = g.repoURLs(cmd, urls)
	if len(urls) <= 1 {
		raw := ""
		if len(urls) == 1 {
			raw = urls[0]
		}
		repo, err := g.openRepo(cmd, raw)
		if err != nil {
			return nil, nil, err
		}
		return []*repository.Repository{repo}, nil, nil
	}
	names := make([]string, len(urls))
	seen := map[string]bool{}
	for i, raw := range urls {
		u, err := providers.ParseURL(raw)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--repo %d: %w", i+1, err)}
		}
		names[i] = providers.RedactURL(u)
		key := strings.TrimSuffix(u.String(), "/")
		if seen[key] {
			return nil, nil, usageError{fmt.Errorf("--repo %s is given twice", names[i])}
		}
		seen[key] = true
	}
	var errs []error
	for i, raw := range urls {
		repo, err := g.openRepoKeyed(cmd, raw, true)
		var ue usageError
		switch {
		case errors.As(err, &ue):
			closeRepos(repos)
			return nil, nil, usageError{fmt.Errorf("--repo %s: %w", names[i], err)}
		case err != nil:
			errs = append(errs, &walarchive.RepoError{Repo: names[i], Err: err})
		default:
			repos = append(repos, repo)
		}
	}
	return repos, walarchive.JoinErrors(errs...), nil
}

func closeRepos(repos []*repository.Repository) {
	for _, r := range repos {
		r.Close()
	}
}

// repoURLs applies the precedence --repo > PGSTOW_REPO (one URL).
func (g *globals) repoURLs(cmd *cobra.Command, urls []string) []string {
	if cmd.Flags().Changed("repo") {
		return urls
	}
	if v := g.getenv("PGSTOW_REPO"); v != "" {
		return []string{v}
	}
	return nil
}

// repoLabels names the repositories a command was given, without secrets,
// as repoLabel does for one, space-separated, for a metrics label.
func (g *globals) repoLabels(cmd *cobra.Command, urls []string) string {
	urls = g.repoURLs(cmd, urls)
	names := make([]string, len(urls))
	for i, raw := range urls {
		u, err := providers.ParseURL(raw)
		if err != nil {
			return "invalid"
		}
		names[i] = providers.RedactURL(u)
	}
	return strings.Join(names, " ")
}
