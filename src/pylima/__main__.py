from pylima.cli.main import main

main()
