package manifest

import "hash/crc32"

// Castagnoli is the CRC-32C table of the whole program: PostgreSQL's
// backup_manifest checksums files with it, the chunks record their stored
// bytes' CRC32C, and the stores check transfers with it. It is read-only.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)
