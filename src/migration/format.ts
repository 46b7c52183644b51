/**
 * QEMU 7.2's migration stream, as written by `migrate` and read by `migrate-incoming`.
 * Sources: QEMU migration/savevm.c, ram.c, migration.c, checked byte for byte against streams
 * written by qemu-system-x86_64 7.2.22 on our machines (see test/integration/migration-roundtrip).
 * Pure constants: no I/O. All integers are big-endian; x86 target pages are 4096 bytes.
 *
 * ── Stream ───────────────────────────────────────────────────────────────────────────────────
 *   offset 0  be32 magic 0x5145564d "QEVM"
 *   offset 4  be32 version 3
 *   offset 8  CONFIGURATION (optional for old machine types; always there for pc-i440fx-7.2)
 *   then sections and commands, each starting with a one-byte type:
 *
 *   CONFIGURATION  07 be32 len, machine name[len]                  ("pc-i440fx-7.2")
 *                  then subsections while the next byte is 05:
 *                  05 u8 len, name[len], be32 version(1), payload
 *                    "configuration/target-page-bits"  be32 bits    (only when > the CPU minimum)
 *                    "configuration/capabilities"      be32 n, n × (u8 len, name)
 *                                                      (validated capabilities that are on;
 *                                                       in 7.2 only x-ignore-shared)
 *                    "configuration/uuid"              16 bytes     (only with validate-uuid)
 *   SECTION_START  01 be32 section_id, u8 len, idstr, be32 instance_id, be32 version_id, payload,
 *                  footer
 *   SECTION_PART   02 be32 section_id, payload, footer
 *   SECTION_END    03 be32 section_id, payload, footer
 *   SECTION_FULL   04 be32 section_id, u8 len, idstr, be32 instance_id, be32 version_id, payload,
 *                  footer.  The payload is VMState encoding, NOT length-prefixed: only the
 *                  device's VMSD (or the VMDESCRIPTION sizes) tell where it ends.
 *   footer         7e be32 section_id
 *   EOF            00
 *   VMDESCRIPTION  06 be32 len, JSON[len]  (after EOF; {"page_size":4096,"devices":[...]});
 *                  optional for the destination (it logs an error when missing, and loads)
 *   COMMAND        08 be16 cmd, be16 len, data[len]   (PACKAGED: data = be32 n, then n bytes
 *                  of an embedded stream follow the command: header-less sections and commands)
 *
 * ── RAM section payload ("ram", instance 0, version 4) ─────────────────────────────────────────
 *   records, each a be64 `offset_in_block | flags` (flags in the low 12 bits):
 *     MEM_SIZE 0x04  (START only) be64 = total bytes of all blocks, then per block until the
 *                    lengths add up to the total:
 *                      u8 len, idstr, be64 used_length,
 *                      [be64 page_size   iff postcopy-ram is on and the block's page size is not
 *                                        the host page size (hugepages)],
 *                      [be64 gpa         iff x-ignore-shared is on]
 *     ZERO     0x02  [u8 len, idstr unless CONTINUE], u8 fill (always 0 from 7.2)
 *     PAGE     0x08  [u8 len, idstr unless CONTINUE], 4096 bytes
 *     CONTINUE 0x20  or-ed into ZERO/PAGE: same block as the previous page record (even one in an
 *                    earlier section)
 *     EOS      0x10  end of this section's records (then the footer)
 *     refused: FULL 0x01 (obsolete), XBZRLE 0x40, HOOK 0x80 (RDMA), COMPRESS_PAGE 0x100,
 *              0x200 (MULTIFD_FLUSH, 8.0+)
 *
 * ── Layouts measured on QEMU 7.2.22 ─────────────────────────────────────────────────────────────
 *   precopy (`migrate exec:cat > F`, stopped or live):
 *     header, CONFIGURATION, START ram (block list, EOS), PART ram × N, END ram,
 *     FULL × ~30 devices, EOF, VMDESCRIPTION
 *   background-snapshot (`background-snapshot=true`, guest running):
 *     header, CONFIGURATION, START ram, PART ram × N (no END ram),
 *     FULL × devices, EOF, VMDESCRIPTION — the device state is saved at the start (guest paused
 *     ~15 ms) into a buffer and appended after the last RAM part; it loads as is.
 *   post-copy (socket, both ends postcopy-ram=true; from the capture in
 *   /work/shared/qemu/postcopy-protocol-7.2.md, not re-measured here):
 *     header, CONFIGURATION, OPEN_RETURN_PATH, PING, POSTCOPY_ADVISE, START ram, PART ram × N,
 *     RAM_DISCARD × blocks, PING, PACKAGED{LISTEN, FULL × devices, PING, RUN}, PING,
 *     PART ram × M, END ram, EOF (no VMDESCRIPTION)
 *
 * ── Return path (destination → source, same socket; postcopy or return-path on) ─────────────────
 *   be16 type, be16 len, data[len]
 *     SHUT 1 (be32 error, 0 = ok)   PONG 2 (be32 value of the PING)
 *     REQ_PAGES_ID 3 (be64 start, be32 len, u8 n, idstr[n]; len = 13 + n)
 *     REQ_PAGES 4 (be64 start, be32 len; the block of the last REQ_PAGES_ID)
 *     RECV_BITMAP 5 (postcopy recovery; followed by unframed bitmap bytes: not supported)
 *     RESUME_ACK 6 (be32)
 *
 * Versioning: the stream version is 3 and has not changed since QEMU 2.x; what varies between
 * QEMU releases is the set of sections, RAM flags and commands. Anything we do not know is refused
 * with an error naming it, never skipped.
 */

export const QEVM_MAGIC = 0x5145564d;
export const QEVM_VERSION = 3;
/** magic + version */
export const HEADER_SIZE = 8;

export const TARGET_PAGE_SIZE = 4096;
export const TARGET_PAGE_BITS = 12;
/** The low bits of a RAM record's be64 that carry flags. */
export const RAM_FLAGS_MASK = TARGET_PAGE_SIZE - 1;

export const Section = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
  FOOTER: 0x7e,
} as const;

/** u8 type + be32 section id */
export const SECTION_ID_HEADER_SIZE = 5;
/** 7e + be32 section id */
export const FOOTER_SIZE = 5;
/** be32 instance id + be32 version id, after the idstr of START/FULL */
export const SECTION_INSTANCE_VERSION_SIZE = 8;

export const RamFlag = {
  FULL: 0x01,
  ZERO: 0x02,
  MEM_SIZE: 0x04,
  PAGE: 0x08,
  EOS: 0x10,
  CONTINUE: 0x20,
  XBZRLE: 0x40,
  HOOK: 0x80,
  COMPRESS_PAGE: 0x100,
  MULTIFD_FLUSH: 0x200,
} as const;

/** be64 offset|flags of a RAM record */
export const RAM_RECORD_HEADER_SIZE = 8;

export const RAM_SECTION_IDSTR = "ram";
export const RAM_SECTION_VERSION = 4;

export const Command = {
  INVALID: 0,
  OPEN_RETURN_PATH: 1,
  PING: 2,
  POSTCOPY_ADVISE: 3,
  POSTCOPY_LISTEN: 4,
  POSTCOPY_RUN: 5,
  POSTCOPY_RAM_DISCARD: 6,
  PACKAGED: 7,
  ENABLE_COLO: 8,
  POSTCOPY_RESUME: 9,
  RECV_BITMAP: 10,
} as const;
export const COMMAND_MAX = Command.RECV_BITMAP;

/** 08 be16 cmd be16 len */
export const COMMAND_HEADER_SIZE = 5;
/** QEMU's MAX_VM_CMD_PACKAGED_SIZE */
export const PACKAGED_MAX = 1 << 24;
/** Version byte at the start of POSTCOPY_RAM_DISCARD's data. */
export const RAM_DISCARD_VERSION = 0;

export const ReturnPath = {
  INVALID: 0,
  SHUT: 1,
  PONG: 2,
  REQ_PAGES_ID: 3,
  REQ_PAGES: 4,
  RECV_BITMAP: 5,
  RESUME_ACK: 6,
} as const;
/** be16 type + be16 len */
export const RP_HEADER_SIZE = 4;
/** be64 start + be32 len */
export const RP_REQ_PAGES_SIZE = 12;

export const ConfigSubsection = {
  TARGET_PAGE_BITS: "configuration/target-page-bits",
  CAPABILITIES: "configuration/capabilities",
  UUID: "configuration/uuid",
} as const;
export const UUID_SIZE = 16;

/** Bounds checked before anything is allocated. */
export const Limits = {
  idstr: 255,
  configurationBytes: 64 * 1024,
  capabilities: 64,
  ramBlocks: 1024,
  vmdescBytes: 16 * 1024 * 1024,
  /** device state between the first FULL section and EOF */
  deviceStateBytes: 64 * 1024 * 1024,
  packagedBytes: PACKAGED_MAX,
} as const;

export type MigrationErrorCode =
  | "MIGRATION_BAD_STREAM"
  | "MIGRATION_TRUNCATED"
  | "MIGRATION_UNSUPPORTED"
  | "MIGRATION_TOO_LARGE"
  | "MIGRATION_BAD_INPUT"
  | "MIGRATION_WRITE_FAILED";
