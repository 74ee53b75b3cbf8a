from pipeline.doors.cli import main

main()
