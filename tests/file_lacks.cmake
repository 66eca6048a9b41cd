# Fails when FILE (a binary is fine) contains the text ABSENT: a build-time path baked into
# the program, for instance.
file(STRINGS "${FILE}" hits REGEX "${ABSENT}")
if(hits)
  message(FATAL_ERROR "${FILE} contains '${ABSENT}'")
endif()
message(STATUS "ok: ${FILE} lacks '${ABSENT}'")
