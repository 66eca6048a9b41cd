# ARGS is '|'-separated, since add_test would split a ';' list into separate -D arguments.
string(REPLACE "|" ";" ARGS "${ARGS}")
# Runs CMD with ARGS and checks both its exit code (EXPECT_RC) and that its combined
# output contains EXPECT, so an error test fails if the right message is missing.
execute_process(COMMAND ${CMD} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
if(NOT rc EQUAL EXPECT_RC)
  message(FATAL_ERROR "exit code ${rc}, expected ${EXPECT_RC}; output:\n${all}")
endif()
string(FIND "${all}" "${EXPECT}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "output lacks '${EXPECT}':\n${all}")
endif()
message(STATUS "ok: ${all}")
