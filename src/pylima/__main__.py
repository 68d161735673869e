from pylima.cli.entry import main

main()
