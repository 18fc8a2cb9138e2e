from cronflow.cli import main

main()
