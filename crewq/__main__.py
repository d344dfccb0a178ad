from crewq.cli import main

main()
