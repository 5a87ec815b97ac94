# snap_smoke.cmake - ctest's check of h2_snap_bench --smoke: it runs, exits
# 0, prints every section, and its JSON says the snapshots really held what
# the benchmark claims to measure.  Nothing here looks at a time.
#
#   cmake -DBENCH=path/to/h2_snap_bench -DDIR=scratch-dir [-DJSON=1]
#         -P snap_smoke.cmake

if(NOT BENCH OR NOT DIR)
  message(FATAL_ERROR "usage: cmake -DBENCH=... -DDIR=... [-DJSON=1] -P snap_smoke.cmake")
endif()

set(args --smoke --dir ${DIR})
if(JSON)
  list(APPEND args --json)
endif()
execute_process(COMMAND ${BENCH} ${args}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "h2_snap_bench ${args} exited ${rc}\n${err}\n${out}")
endif()

if(NOT JSON)
  foreach(want
      "1. Snapshot create latency vs data written"
      "idle volume, 6 creates, ms"
      "right after 1 MiB of random 4 KiB writes"
      "delete of the idle snapshots but the oldest"
      "AIM create O\\(1\\): idle median big/small [0-9.]+"
      "2. 4 KiB random overwrites with snapshots held"
      "\n +0 +[0-9]+ +1\\.00 "
      "\n +1 +[0-9]+ +[0-9.]+ "
      "\n +20 +[0-9]+ +[0-9.]+ "
      "AIM with 1 snapshot held, IOPS >= 0.90 x none: [0-9.]+"
      "AIM with 20 snapshots held"
      "3. Snapshot delete time vs exclusively held data"
      "\n  none +0 KiB "
      "\n  sequential 1 MiB +32 MiB +[0-9.]+"
      "\n  scattered 4 KiB +32 MiB +[0-9.]+")
    if(NOT out MATCHES "${want}")
      message(FATAL_ERROR "h2_snap_bench --smoke: no match for \"${want}\" in:\n${out}")
    endif()
  endforeach()
  return()
endif()

# JSON: parses, and every section is there.
string(JSON n ERROR_VARIABLE jerr LENGTH "${out}" create small create_idle_ms all)
if(jerr)
  message(FATAL_ERROR "h2_snap_bench --json: ${jerr}\n${out}")
endif()
if(NOT n EQUAL 6)
  message(FATAL_ERROR "expected 6 idle creates per volume, got ${n}")
endif()
foreach(side small big)
  foreach(key create_idle_ms create_after_writes_ms delete_idle_ms)
    string(JSON med GET "${out}" create ${side} ${key} median)
    if(NOT med GREATER 0)
      message(FATAL_ERROR "create.${side}.${key}.median is ${med}")
    endif()
  endforeach()
  # Idle snapshots share every block: deleting them frees nothing.
  string(JSON x GET "${out}" create ${side} delete_excl_bytes_max)
  if(NOT x EQUAL 0)
    message(FATAL_ERROR "an idle snapshot of ${side} held ${x} bytes alone")
  endif()
endforeach()

string(JSON n LENGTH "${out}" write)
if(NOT n EQUAL 3)
  message(FATAL_ERROR "expected 3 write configurations, got ${n}")
endif()
foreach(i 0 1 2)
  string(JSON snaps GET "${out}" write ${i} snapshots)
  string(JSON held GET "${out}" write ${i} snapshot_mib)
  string(JSON iops GET "${out}" write ${i} iops)
  string(JSON wa GET "${out}" write ${i} wa)
  if(NOT iops GREATER 0 OR NOT wa GREATER 0)
    message(FATAL_ERROR "write with ${snaps} snapshots: iops ${iops}, wa ${wa}")
  endif()
  # The aging made the snapshots hold blocks the volume replaced.
  if(snaps EQUAL 0 AND NOT held EQUAL 0)
    message(FATAL_ERROR "no snapshots, yet ${held} MiB held by snapshots")
  endif()
  if(snaps GREATER 0 AND NOT held GREATER 0)
    message(FATAL_ERROR "${snaps} snapshots hold nothing alone")
  endif()
endforeach()

string(JSON n LENGTH "${out}" delete)
if(NOT n EQUAL 10)
  message(FATAL_ERROR "expected 10 delete rows, got ${n}")
endif()
foreach(i RANGE 9)
  string(JSON e GET "${out}" delete ${i} overwritten_bytes)
  string(JSON excl GET "${out}" delete ${i} excl_bytes)
  string(JSON freed GET "${out}" delete ${i} freed_bytes)
  string(JSON ms GET "${out}" delete ${i} delete_ms)
  # The snapshot held at least the data overwritten after it (plus tree
  # blocks), and deleting it gave back exactly what it held alone.
  if(excl LESS e)
    message(FATAL_ERROR "delete row ${i}: ${e} bytes overwritten, the snapshot held ${excl} alone")
  endif()
  if(NOT excl EQUAL freed)
    message(FATAL_ERROR "delete row ${i}: held ${excl} bytes alone, freed ${freed}")
  endif()
  if(NOT ms GREATER 0)
    message(FATAL_ERROR "delete row ${i}: time ${ms}")
  endif()
endforeach()
