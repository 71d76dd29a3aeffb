from cau.cli.app import main

main()
